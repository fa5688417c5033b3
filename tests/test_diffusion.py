import math

import pytest
import torch

from unet_edu.diffusion import (NoiseSchedule, ddim_sample, ddim_timesteps, ddpm_sample, diffusion_loss,
                                guided_eps, q_sample)
from unet_edu.models import DiffusionUNet


def test_linear_schedule_matches_closed_form():
    s = NoiseSchedule("linear", 1000)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    t = 499
    expected = math.prod(1 - (1e-4 + (0.02 - 1e-4) * i / 999) for i in range(t + 1))
    assert s.alphas_cumprod[t].item() == pytest.approx(expected, rel=1e-10)
    assert (s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]).all()


def test_cosine_schedule_matches_closed_form():
    s = NoiseSchedule("cosine", 1000)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 250, 500, 900):
        assert s.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-8)
    assert s.betas.max() <= 0.999


def test_unknown_schedule():
    with pytest.raises(ValueError, match="linear' or 'cosine"):
        NoiseSchedule("quadratic")


def test_q_sample_statistics():
    s = NoiseSchedule("linear", 1000)
    x0 = torch.full((20000, 1, 1, 1), 0.5)
    t = torch.full((20000,), 300)
    xt = q_sample(s, x0, t, generator=torch.Generator().manual_seed(0))
    a = s.alphas_cumprod[300].item()
    assert xt.mean().item() == pytest.approx(math.sqrt(a) * 0.5, abs=0.02)
    assert xt.std().item() == pytest.approx(math.sqrt(1 - a), abs=0.02)
    noise = torch.randn(3, 1, 4, 4)
    assert torch.allclose(s.predict_x0(s.q_sample(x0[:3].expand(3, 1, 4, 4), t[:3], noise), t[:3], noise), torch.full((3, 1, 4, 4), 0.5), atol=1e-5)


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return DiffusionUNet(base_channels=8, channel_mult=(1, 2), norm_groups=4, num_heads=2, num_classes=3,
                         num_timesteps=50)


def test_loss_is_scalar_and_per_image(tiny_model):
    s = NoiseSchedule("linear", 50)
    x0, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    g = torch.Generator().manual_seed(0)
    assert diffusion_loss(tiny_model, s, x0, y, generator=g).dim() == 0
    assert diffusion_loss(tiny_model, s, x0, y, generator=g, reduction="none").shape == (4,)


def test_ddim_eta0_is_deterministic_and_trajectory_complete(tiny_model):
    s = NoiseSchedule("cosine", 50)
    runs = [ddim_sample(tiny_model, s, (2, 1, 8, 8), steps=10, y=torch.tensor([1, 2]), guidance_scale=2.0,
                        generator=torch.Generator().manual_seed(3), return_trajectory=True, progress=False)
            for _ in range(2)]
    assert torch.equal(runs[0].x, runs[1].x)
    tr = runs[0]
    # Trailing spacing (the default): from the noisiest step down in strides of 5, never t = 0.
    assert tr.timesteps == ddim_timesteps(50, 10) == list(range(49, 0, -5))
    assert len(tr.xt) == 11 and len(tr.x0_pred) == 10 and len(tr.eps_pred) == 10
    assert torch.equal(tr.xt[-1], tr.x.cpu())
    # With eta > 0 the same seed still gives the same images, a different seed different ones.
    a = ddim_sample(tiny_model, s, (2, 1, 8, 8), steps=10, eta=1.0, generator=torch.Generator().manual_seed(3), progress=False)
    b = ddim_sample(tiny_model, s, (2, 1, 8, 8), steps=10, eta=1.0, generator=torch.Generator().manual_seed(4), progress=False)
    assert not torch.equal(a.x, b.x)


def test_ddpm_runs_all_steps(tiny_model):
    s = NoiseSchedule("linear", 50)
    tr = ddpm_sample(tiny_model, s, (2, 1, 8, 8), y=torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0),
                     return_trajectory=True, progress=False)
    assert tr.timesteps == list(range(49, -1, -1)) and len(tr.xt) == 51
    assert tr.x.abs().max() <= 1.0 + 1e-5  # the last step returns the clipped x0 estimate's mean


def test_guidance_scale_one_is_conditional_and_zero_is_unconditional(tiny_model):
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([10, 20]), torch.tensor([1, 2])
    tiny_model.eval()
    assert torch.allclose(guided_eps(tiny_model, x, t, y, 1.0), tiny_model(x, t, y))
    assert torch.allclose(guided_eps(tiny_model, x, t, y, 0.0), tiny_model(x, t, torch.tensor([3, 3])), atol=1e-5)


def test_ddim_timesteps_validation():
    with pytest.raises(ValueError, match=r"steps must lie in 1..1000"):
        ddim_timesteps(1000, 0)
    with pytest.raises(ValueError, match="spacing must be one of 'trailing'"):
        ddim_timesteps(1000, 5, "uniform")
    for spacing in ("trailing", "linspace", "leading"):
        assert ddim_timesteps(1000, 1000, spacing) == list(range(999, -1, -1))


def test_ddim_timestep_spacings_match_their_definitions():
    # Lin et al. (2024), table 2, for T = 1000 and 5 or 3 steps.
    assert ddim_timesteps(1000, 5, "trailing") == [999, 799, 599, 399, 199]
    assert ddim_timesteps(1000, 5, "linspace") == [999, 749, 500, 250, 0]
    assert ddim_timesteps(1000, 5, "leading") == [800, 600, 400, 200, 0]
    assert ddim_timesteps(1000, 3, "trailing") == [999, 666, 332]


def test_every_spacing_ends_on_a_clean_image(tiny_model):
    # After its last timestep DDIM jumps to alpha_bar = 1: with clipping the result is the
    # clipped x0 estimate, inside [-1, 1], whether or not t = 0 was visited.
    s = NoiseSchedule("cosine", 50)
    for spacing in ("trailing", "linspace", "leading"):
        tr = ddim_sample(tiny_model, s, (2, 1, 8, 8), steps=5, spacing=spacing, progress=False,
                         generator=torch.Generator().manual_seed(0), return_trajectory=True)
        assert tr.timesteps == ddim_timesteps(50, 5, spacing)
        assert torch.allclose(tr.x, tr.x0_pred[-1]) and tr.x.abs().max() <= 1
