"""Bad arguments to the diffusion maths end in a ValueError that names the argument and the fix."""

import pytest
import torch

from unet_edu.diffusion import NoiseSchedule, ddim_sample, ddpm_sample, diffusion_loss, q_sample
from unet_edu.models import DiffusionUNet

S = NoiseSchedule("linear", 10)


@pytest.fixture(scope="module")
def cond():
    torch.manual_seed(0)
    return DiffusionUNet(base_channels=4, channel_mult=(1, 2), num_res_blocks=1, norm_groups=2,
                         num_heads=1, num_classes=3, num_timesteps=10)


@pytest.fixture(scope="module")
def uncond():
    torch.manual_seed(0)
    return DiffusionUNet(base_channels=4, channel_mult=(1, 2), num_res_blocks=1, norm_groups=2,
                         num_heads=1, num_timesteps=10)


def _x(b=2):
    return torch.rand(b, 1, 8, 8) * 2 - 1


# ------------------------------------------------------------------ the schedule
@pytest.mark.parametrize("kw", [dict(beta_end=1.5), dict(beta_start=0.0), dict(beta_start=-0.1),
                                dict(beta_end=float("nan"))])
def test_betas_outside_zero_one_are_refused(kw):
    with pytest.raises(ValueError, match=r"must lie strictly between 0 and 1"):
        NoiseSchedule("linear", 10, **kw)


@pytest.mark.parametrize("n", [0, 2.5, "10"])
def test_num_steps_must_be_a_positive_whole_number(n):
    with pytest.raises(ValueError, match="num_steps must be"):
        NoiseSchedule("linear", n)


def test_valid_schedules_keep_alpha_bar_in_zero_one():
    for kind in ("linear", "cosine"):
        a = NoiseSchedule(kind, 10, beta_start=1e-4, beta_end=0.5).alphas_cumprod
        assert (a > 0).all() and (a <= 1).all()


# ------------------------------------------------------------------ q_sample
def test_q_sample_refuses_negative_and_float_timesteps():
    x = _x()
    with pytest.raises(ValueError, match=r"lie in 0..9 .*got -1..-1.*negative"):
        q_sample(S, x, torch.tensor([-1, -1]))
    with pytest.raises(ValueError, match=r"must be integers, got dtype torch.float32; use t.long"):
        q_sample(S, x, torch.tensor([1.5, 2.0]))
    with pytest.raises(ValueError, match=r"lie in 0..9.*got 10..10"):
        q_sample(S, x, 10)
    assert q_sample(S, x, 3).shape == x.shape  # a plain number is one step for every image


# ------------------------------------------------------------------ diffusion_loss
def test_loss_refuses_non_finite_pixels(cond):
    x = _x()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"x0 contains 1 NaN or infinite value.*nan_to_num"):
        diffusion_loss(cond, S, x, torch.tensor([0, 1]))


def test_loss_refuses_integer_images_and_casts_other_float_precisions(cond):
    with pytest.raises(ValueError, match=r"dtype torch.uint8.*x0.float\(\) / 255 \* 2 - 1"):
        diffusion_loss(cond, S, torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]))
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    x, y = _x(), torch.tensor([0, 1])
    ref = diffusion_loss(cond, S, x, y, generator=g())
    for dtype in (torch.float64, torch.float16):
        got = diffusion_loss(cond, S, x.to(dtype), y, generator=g())
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(ref.item(), rel=1e-2)


def test_loss_refuses_an_empty_batch(cond):
    with pytest.raises(ValueError, match=r"non-empty batch .*got shape \(0, 1, 8, 8\)"):
        diffusion_loss(cond, S, torch.zeros(0, 1, 8, 8))


def test_loss_refuses_float_labels_and_labels_for_an_unconditional_model(cond, uncond):
    with pytest.raises(ValueError, match=r"must be integers, got dtype torch.float32.*y.long"):
        diffusion_loss(cond, S, _x(), torch.tensor([0.7, 1.9]))
    with pytest.raises(ValueError, match=r"model is unconditional"):
        diffusion_loss(uncond, S, _x(), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels must lie in 0..2 \(or 3 for 'no label'\)"):
        diffusion_loss(cond, S, _x(), torch.tensor([0, 7]))


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_p_uncond_must_be_a_probability(cond, p):
    with pytest.raises(ValueError, match=r"p_uncond is a probability"):
        diffusion_loss(cond, S, _x(), torch.tensor([0, 1]), p_uncond=p)


def test_reduction_sum_is_refused_not_silently_per_image(cond):
    with pytest.raises(ValueError, match=r"reduction must be 'mean' or 'none', got 'sum'"):
        diffusion_loss(cond, S, _x(), torch.tensor([0, 1]), reduction="sum")


def test_model_and_schedule_must_agree_on_the_number_of_steps(cond):
    with pytest.raises(ValueError, match=r"built for num_timesteps=10 but the schedule has 1000"):
        diffusion_loss(cond, NoiseSchedule("linear", 1000), _x(), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"built for num_timesteps=10 but the schedule has 5"):
        ddim_sample(cond, NoiseSchedule("linear", 5), (1, 1, 8, 8), steps=2, progress=False)


# ------------------------------------------------------------------ samplers
@pytest.mark.parametrize("eta", [-0.5, float("nan"), 2.0])
def test_ddim_eta_outside_zero_one(cond, eta):
    with pytest.raises(ValueError, match=r"eta must lie in \[0, 1\]"):
        ddim_sample(cond, S, (1, 1, 8, 8), steps=2, eta=eta, progress=False)


@pytest.mark.parametrize("sampler", [ddpm_sample, ddim_sample])
def test_nan_guidance_is_refused(cond, sampler):
    with pytest.raises(ValueError, match=r"guidance_scale must be a finite number, got nan"):
        sampler(cond, S, (1, 1, 8, 8), y=1, guidance_scale=float("nan"), progress=False)


def test_non_integer_step_counts(cond):
    with pytest.raises(ValueError, match=r"steps must be a whole number, got 2.5"):
        ddim_sample(cond, S, (1, 1, 8, 8), steps=2.5, progress=False)
    with pytest.raises(ValueError, match=r"shape\[0\] must be a whole number"):
        ddim_sample(cond, S, (1.5, 1, 8, 8), steps=2, progress=False)
    out = ddim_sample(cond, S, (1, 1, 8, 8), steps=2.0, progress=False)  # 2.0 is a whole number
    assert out.x.shape == (1, 1, 8, 8)


def test_sampler_labels_name_the_callers_batch_not_the_doubled_one(cond, uncond):
    with pytest.raises(ValueError, match=r"one label per image, 4 in all, got shape \(2,\)"):
        ddim_sample(cond, S, (4, 1, 8, 8), steps=2, y=torch.tensor([0, 1]), guidance_scale=3.0,
                    progress=False)
    with pytest.raises(ValueError, match=r"model is unconditional"):
        ddim_sample(uncond, S, (2, 1, 8, 8), steps=2, y=torch.tensor([0, 1]), guidance_scale=3.0,
                    progress=False)
    with pytest.raises(ValueError, match=r"labels y must be integers.*truncated"):
        ddpm_sample(cond, S, (2, 1, 8, 8), y=torch.tensor([0.5, 1.5]), progress=False)
