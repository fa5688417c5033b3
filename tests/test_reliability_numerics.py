"""Numerical edges: samplers never return NaN without a word, half precision works, and
arguments that look right (8.0, numpy integers, a 0-d tensor) are taken as meant."""

import numpy as np
import pytest
import torch

from unet_edu import diffusion
from unet_edu.diffusion import NoiseSchedule, ddim_sample, ddpm_sample
from unet_edu.models import DiffusionUNet

S = NoiseSchedule("linear", 10)
KW = dict(base_channels=4, channel_mult=(1, 2), num_res_blocks=1, norm_groups=2, num_heads=1,
          num_classes=3, num_timesteps=10)


@pytest.fixture(scope="module")
def cond():
    torch.manual_seed(0)
    return DiffusionUNet(**KW)


def _gen():
    return torch.Generator().manual_seed(0)


# ------------------------------------------------------------------ NaN is named, with its cause
def test_nan_weights_make_the_sampler_name_the_weights():
    torch.manual_seed(0)
    model = DiffusionUNet(**KW)
    with torch.no_grad():
        model.conv_out.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"ddim_sample: the samples became NaN or "
                                                 r"infinite at timestep 9 \(step 1 of 3.*"
                                                 r"weights hold NaN.*conv_out.weight.*load good"):
        ddim_sample(model, S, (2, 1, 8, 8), steps=3, progress=False)


@pytest.mark.parametrize("sampler", [ddim_sample, ddpm_sample])
def test_an_enormous_guidance_scale_without_clipping_is_named(cond, sampler):
    kwargs = dict(steps=3) if sampler is ddim_sample else {}
    with pytest.raises(FloatingPointError, match=r"guidance_scale=1e\+30 .* clip_x0=False.*"
                                                 r"use clip_x0=True or a scale of 1 to 10"):
        sampler(cond, S, (2, 1, 8, 8), y=1, guidance_scale=1e30, clip_x0=False, progress=False,
                **kwargs)


def test_the_same_scale_with_clipping_gives_finite_images(cond):
    x = ddim_sample(cond, S, (2, 1, 8, 8), steps=3, y=1, guidance_scale=1e30, progress=False).x
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("kw", [dict(beta_end=0.9999), dict(num_steps=100_000)])
def test_a_schedule_that_destroys_the_signal_completely_is_refused(kw):
    with pytest.raises(ValueError, match=r"destroys the signal completely: alpha_bar falls to .* "
                                         r"which is 0 in float32.*smaller beta_end"):
        NoiseSchedule("linear", **{"num_steps": 1000, **kw})


# ------------------------------------------------------------------ half precision
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_samples_like_the_float32_one(cond, dtype):
    half = DiffusionUNet(**KW)
    half.load_state_dict(cond.state_dict())
    half = half.to(dtype)
    try:
        half(torch.zeros(1, 1, 8, 8, dtype=dtype), torch.tensor([3]))
    except RuntimeError as err:  # an old torch without these kernels on this device
        pytest.skip(f"{dtype} convolutions are not available here: {err}")
    args = dict(steps=3, y=torch.tensor([0, 1]), guidance_scale=2.0, progress=False)
    ref = ddim_sample(cond, S, (2, 1, 8, 8), generator=_gen(), **args).x
    got = ddim_sample(half, S, (2, 1, 8, 8), generator=_gen(), **args).x
    assert got.dtype == dtype
    assert (got.float() - ref).abs().max() < (0.01 if dtype == torch.float16 else 0.05)


def test_float32_embedding_is_unchanged_by_the_half_precision_support(cond):
    t, y = torch.tensor([0, 5, 9]), torch.tensor([0, 1, 3])
    expected = cond.time_embed(t.float()) + cond.class_embed(y)
    assert torch.equal(cond.embed(t.float(), y), expected)


# ------------------------------------------------------------------ arguments taken as meant
def test_ddpm_with_steps_points_to_ddim(cond):
    with pytest.raises(ValueError, match=r"ddpm_sample: steps=5, but DDPM visits all 10 steps.*"
                                         r"ddim_sample\(\.\.\., steps=5\)"):
        ddpm_sample(cond, S, (1, 1, 8, 8), steps=5, progress=False)
    a = ddpm_sample(cond, S, (1, 1, 8, 8), steps=10, generator=_gen(), progress=False).x
    b = ddpm_sample(cond, S, (1, 1, 8, 8), generator=_gen(), progress=False).x
    assert torch.equal(a, b)


@pytest.mark.parametrize("shape", [(2, 1, 8.0, 8), (np.int64(2), 1, 8, np.int32(8)),
                                   torch.Size([2, 1, 8, 8])])
def test_whole_numbers_in_a_shape_are_whole_numbers(cond, shape):
    ref = ddim_sample(cond, S, (2, 1, 8, 8), steps=2, generator=_gen(), progress=False).x
    assert torch.equal(ddim_sample(cond, S, shape, steps=2, generator=_gen(), progress=False).x, ref)


@pytest.mark.parametrize("label", [np.int64(2), torch.tensor(2), np.array([2, 2]), [2, 2]])
def test_labels_as_numpy_or_tensor_scalars_are_accepted(cond, label):
    ref = ddim_sample(cond, S, (2, 1, 8, 8), steps=2, y=2, guidance_scale=2.0, generator=_gen(),
                      progress=False).x
    got = ddim_sample(cond, S, (2, 1, 8, 8), steps=2, y=label, guidance_scale=2.0,
                      generator=_gen(), progress=False).x
    assert torch.equal(got, ref)


# ------------------------------------------------------------------ batches too large to fit
def test_a_batch_that_cannot_fit_is_refused_before_anything_is_allocated(cond, monkeypatch):
    monkeypatch.setattr(diffusion, "_memory_of", lambda device: 8 * 2**30)  # an 8 GiB machine
    with pytest.raises(MemoryError, match=r"ddim_sample: a batch of 10000000 images of shape "
                                          r"\(1, 8, 8\) needs at least .* GiB on the cpu device, "
                                          r"which has 8.0 GiB in all; draw them in batches"):
        ddim_sample(cond, S, (10**7, 1, 8, 8), steps=2, progress=False)
    # On a 1 GiB machine, 200,000 tiny images fit, but not three copies of them for 11 steps.
    monkeypatch.setattr(diffusion, "_memory_of", lambda device: 2**30)
    with pytest.raises(MemoryError, match=r"return_trajectory keeps three copies of the batch "
                                          r"for each of 11 steps.*leave return_trajectory off"):
        ddim_sample(cond, S, (200_000, 1, 8, 8), steps=10, return_trajectory=True,
                    progress=False)


def test_running_out_of_memory_inside_the_network_says_what_to_do(cond, monkeypatch):
    def exhausted(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                           "123456789 bytes")

    monkeypatch.setattr(diffusion, "guided_eps", exhausted)
    with pytest.raises(MemoryError, match=r"ddpm_sample: ran out of memory for a batch of 8 "
                                          r"images.*smaller batches \(e.g. 2 at a time\)"):
        ddpm_sample(cond, S, (8, 1, 8, 8), progress=False)
