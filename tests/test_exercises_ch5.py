"""Chapter 5's checkers, the self-attention reference that tells positions from channels, and the
build-it checkers: q_sample, the loss, one DDIM step, guidance."""

import math

import torch
import torch.nn.functional as F

from unet_edu.blocks import SelfAttention
from unet_edu.diffusion import ddim_timesteps
from unet_edu.exercises.chapter5 import check_ddim_step, check_eps_loss, check_guided_eps, check_q_sample
from unet_edu.exercises.feedback import Feedback
from unet_edu.exercises.chapter5 import (attends_over_positions, attention_weights, check_attention_entries,
                                         check_attention_forward, check_ddim_timesteps, check_resblock_params,
                                         reference_self_attention)


def channel_attention(layer, x):
    """The easy bug: q, k, v laid out as (B, heads, head_dim, H*W), so q @ k^T mixes channels."""
    b, c, h, w = x.shape
    tokens = layer.norm(x).flatten(2).transpose(1, 2)
    qkv = layer.qkv(tokens).transpose(1, 2).reshape(b, 3, layer.num_heads, c // layer.num_heads, h * w)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // layer.num_heads), dim=-1)
    out = (attn @ v).reshape(b, c, h * w).transpose(1, 2)
    return x + layer.proj(out).transpose(1, 2).reshape(b, c, h, w)


def package_forward(layer, x):
    return layer(x)


def test_reference_matches_the_package_layer_and_rejects_the_bug():
    torch.manual_seed(0)
    layer = SelfAttention(16, num_heads=4, norm_groups=4)
    x = torch.randn(2, 16, 4, 5)
    assert torch.allclose(reference_self_attention(layer, x), layer(x), atol=1e-5)
    assert attends_over_positions(package_forward, layer, x)
    assert channel_attention(layer, x).shape == x.shape  # the bug runs and has the right shape...
    assert not attends_over_positions(channel_attention, layer, x)  # ...but computes something else


def test_attention_weights_are_over_positions():
    torch.manual_seed(1)
    layer = SelfAttention(8, num_heads=2, norm_groups=2)
    a = attention_weights(layer, torch.randn(3, 8, 3, 4))
    assert a.shape == (3, 2, 12, 12)
    assert torch.allclose(a.sum(-1), torch.ones(3, 2, 12))


def test_checkers(grade):
    assert grade(check_resblock_params, 16, 32, 64, 16 * 2 + 16 * 9 * 32 + 32 + 32 * 2 + 32 * 9 * 32 + 32
                                 + 64 * 64 + 64 + 16 * 32 + 32)
    assert not grade(check_resblock_params, 16, 32, 64, 1)
    assert grade(check_attention_entries, 7, 7, 4, 4 * 49 * 49)
    assert not grade(check_attention_entries, 7, 7, 4, 49 * 49)
    assert grade(check_ddim_timesteps, 4, ddim_timesteps(1000, 4))
    assert grade(check_ddim_timesteps, 5, [999, 799, 599, 399, 199])
    assert not grade(check_ddim_timesteps, 5, [1000, 800, 600, 400, 200])
    assert grade(check_ddim_timesteps, 4, [999, 666, 333, 0], spacing="linspace")
    assert not grade(check_ddim_timesteps, 4, [999, 666, 333, 0])
    assert grade(check_ddim_timesteps, 5, [800, 600, 400, 200, 0], spacing="leading")
    assert grade(check_attention_forward, package_forward)
    assert not grade(check_attention_forward, channel_attention)
    assert not grade(check_attention_forward, lambda layer, x: x.mean(1))
    assert not grade(check_attention_forward, lambda layer, x: 1 / 0)


def test_sdpa_layout_used_by_the_package():
    # The package's layer uses (B, heads, HW, d); the same call on the transposed layout is the bug.
    q = torch.randn(1, 1, 6, 3)
    assert F.scaled_dot_product_attention(q, q, q).shape == (1, 1, 6, 3)


# --------------------------------------------------------------------------------------------
# Build-it exercises: q_sample, the loss, one DDIM step, guidance
# --------------------------------------------------------------------------------------------
def verdict(feedback, status):
    """The feedback's text, after checking it is one line with this status."""
    assert isinstance(feedback, Feedback)
    assert "\n" not in str(feedback)
    assert feedback.status == status, str(feedback)
    return feedback.text


def q(schedule, x0, t, noise, *, table="alphas_cumprod", offset=0, roots=True, swap=False,
      reshape=True, cast=True):
    a = getattr(schedule, table)[t + offset]
    if cast:
        a = a.to(x0.dtype)
    if reshape:
        a = a.view(-1, 1, 1, 1)
    s, n = (a.sqrt(), (1 - a).sqrt()) if roots else (a, 1 - a)
    if swap:
        s, n = n, s
    return s * x0 + n * noise


def test_reference_q_sample_passes():
    assert "equals q_sample" in verdict(check_q_sample(q), "pass")


def test_typical_wrong_q_samples_get_their_own_hint():
    cases = {
        "one step's share of signal": lambda s, x, t, n: q(s, x, t, n, table="alphas"),
        "not [t - 1]": lambda s, x, t, n: q(s, x, t, n, offset=-1),
        "variances add, standard deviations do not": lambda s, x, t, n: q(s, x, t, n,
                                                                          roots=False),
        "the coefficients are swapped": lambda s, x, t, n: q(s, x, t, n, swap=True),
        "reshape it to (B, 1, 1, 1)": lambda s, x, t, n: q(s, x, t, n, reshape=False),
        "cast the coefficients": lambda s, x, t, n: q(s, x, t, n, cast=False),
    }
    for text, fn in cases.items():
        assert text in verdict(check_q_sample(fn), "hint")


def test_q_sample_bad_input():
    def my_q_sample(schedule, x0, t, noise):
        raise NotImplementedError("fill in my_q_sample")

    assert verdict(check_q_sample(my_q_sample), "todo")
    assert "must take (schedule, x0, t, noise)" in verdict(check_q_sample(lambda x0, t: x0),
                                                           "error")
    assert "returned shape" in verdict(check_q_sample(lambda s, x, t, n: q(s, x, t, n)[0]),
                                       "hint")


def eps_loss(model, schedule, x0, generator=None, *, low=0, high=None, target="noise",
             reduction="mean", shared_t=False, uniform=False, seeded=True, with_t=True):
    b, high = len(x0), schedule.num_steps if high is None else high
    t = torch.randint(low, high, (1 if shared_t else b,), generator=generator).expand(b)
    if uniform:
        noise = torch.rand(x0.shape, generator=generator)
    else:
        noise = torch.randn(x0.shape, generator=generator) if seeded else torch.randn_like(x0)
    x_t = q(schedule, x0, t.clamp(max=schedule.num_steps - 1), noise)
    pred = model(x_t, t) if with_t else model(x_t)
    return F.mse_loss(pred, {"noise": noise, "x0": x0}[target], reduction=reduction)


def test_reference_eps_loss_passes():
    assert "draws t over 0..T-1" in verdict(check_eps_loss(eps_loss), "pass")


def test_typical_wrong_eps_losses_get_their_own_hint():
    cases = {
        "not the clean image x0": lambda m, s, x, g: eps_loss(m, s, x, g, target="x0"),
        "excludes its upper bound": lambda m, s, x, g: eps_loss(m, s, x, g, low=1,
                                                                high=s.num_steps + 1),
        "your t never reached 0": lambda m, s, x, g: eps_loss(m, s, x, g, low=1),
        "do not sum them": lambda m, s, x, g: eps_loss(m, s, x, g, reduction="sum"),
        "every image got the same t": lambda m, s, x, g: eps_loss(m, s, x, g, shared_t=True),
        "torch.randn, not torch.rand": lambda m, s, x, g: eps_loss(m, s, x, g, uniform=True),
        "torch.randn_like takes no generator": lambda m, s, x, g: eps_loss(m, s, x, g,
                                                                           seeded=False),
        "pass the timesteps to the model": lambda m, s, x, g: eps_loss(m, s, x, g,
                                                                       with_t=False),
        "not a Python number": lambda m, s, x, g: eps_loss(m, s, x, g).item(),
        "detached from the model": lambda m, s, x, g: eps_loss(m, s, x, g).detach(),
    }
    for text, fn in cases.items():
        assert text in verdict(check_eps_loss(fn), "hint")


def test_eps_loss_bad_input():
    assert "must take (model, schedule, x0, generator)" in verdict(
        check_eps_loss(lambda model: 0), "error")
    assert "raised KeyError" in verdict(check_eps_loss(lambda m, s, x, g: {}["t"]), "error")


def ddim(x_t, eps, a_bar, a_prev, eta=0.0, noise=None, *, clip=True, recompute=True,
         x0_with=None, mix_with=None, sigma2=True, eta_factor=True):
    a_x0 = a_bar if x0_with is None else x0_with(a_bar, a_prev)
    x0 = (x_t - math.sqrt(1 - a_x0) * eps) / math.sqrt(a_x0)
    if clip:
        x0 = x0.clamp(-1, 1)
        if recompute:
            eps = (x_t - math.sqrt(a_bar) * x0) / math.sqrt(1 - a_bar)
    sigma = (eta if eta_factor else 1.0) * math.sqrt((1 - a_prev) / (1 - a_bar)) \
        * math.sqrt(1 - a_bar / a_prev)
    if noise is None:
        sigma = 0.0
    c0 = a_prev if mix_with is None else mix_with(a_bar, a_prev)
    direction = 1 - a_prev - (sigma**2 if sigma2 else 0.0)
    x_prev = math.sqrt(c0) * x0 + math.sqrt(max(direction, 0.0)) * eps
    return x_prev + sigma * noise if sigma > 0 else x_prev


def test_reference_ddim_step_passes():
    assert "equals ddim_step" in verdict(check_ddim_step(ddim), "pass")


def test_typical_wrong_ddim_steps_get_their_own_hint():
    cases = {
        "you used sqrt(alpha_bar_t) where the step needs sqrt(alpha_bar_prev)":
            lambda *a: ddim(*a, mix_with=lambda a_bar, a_prev: a_bar),
        "you divided by sqrt(alpha_bar_prev) where the clean estimate needs":
            lambda *a: ddim(*a, x0_with=lambda a_bar, a_prev: a_prev),
        "clip the clean estimate": lambda *a: ddim(*a, clip=False),
        "recompute eps_hat": lambda *a: ddim(*a, recompute=False),
        "the fresh noise takes sigma^2 of the variance": lambda *a: ddim(*a, sigma2=False),
        "sigma carries the factor eta": lambda *a: ddim(*a, eta_factor=False),
    }
    for text, fn in cases.items():
        assert text in verdict(check_ddim_step(fn), "hint")


def test_ddim_step_bad_input():
    def torch_roots(x_t, eps, a_bar, a_prev, eta=0.0, noise=None):
        return (x_t - torch.sqrt(1 - a_bar) * eps) / torch.sqrt(a_bar)

    def always_noise(x_t, eps, a_bar, a_prev, eta=0.0, noise=None):
        return ddim(x_t, eps, a_bar, a_prev) + 0.0 * noise

    assert "math.sqrt" in verdict(check_ddim_step(torch_roots), "hint")
    assert "noise may be None" in verdict(check_ddim_step(always_noise), "hint")
    assert "return x_prev only" in verdict(check_ddim_step(lambda *a: (ddim(*a), None)),
                                           "error")
    assert "must take (x_t, eps, a_bar, a_bar_prev, eta, noise)" in verdict(
        check_ddim_step(lambda x_t, eps: x_t), "error")


def guided(model, x_t, t, y, scale, *, null=None, form="book", with_labels=True):
    null_label = torch.full_like(y, model.config["num_classes"]) if null is None else \
        torch.full_like(y, null)
    cond = model(x_t, t, y if with_labels else null_label)
    uncond = model(x_t, t, null_label)
    if form == "swapped":
        return cond + scale * (uncond - cond)
    if form == "w":
        return cond + scale * (cond - uncond)
    return uncond + scale * (cond - uncond)


def test_reference_guidance_passes_also_in_one_batched_call():
    def batched(model, x_t, t, y, scale):
        null = torch.full_like(y, model.config["num_classes"])
        cond, uncond = model(torch.cat([x_t, x_t]), torch.cat([t, t]),
                             torch.cat([y, null])).chunk(2)
        return uncond + scale * (cond - uncond)

    assert "equals guided_eps" in verdict(check_guided_eps(guided), "pass")
    assert verdict(check_guided_eps(batched), "pass")


def test_typical_wrong_guidance_gets_its_own_hint():
    cases = {
        "label 0 is the digit zero": lambda *a: guided(*a, null=0),
        "conditional and unconditional are swapped": lambda *a: guided(*a, form="swapped"),
        "the book's scale is their 1 + w": lambda *a: guided(*a, form="w"),
        "the conditional prediction needs the labels": lambda *a: guided(*a,
                                                                         with_labels=False),
    }
    for text, fn in cases.items():
        assert text in verdict(check_guided_eps(fn), "hint")


def test_guidance_bad_input():
    assert "must take (model, x_t, t, y, scale)" in verdict(
        check_guided_eps(lambda model, x_t: x_t), "error")
    assert "returned shape" in verdict(
        check_guided_eps(lambda m, x, t, y, s: guided(m, x, t, y, s).mean(1)), "hint")


def test_checks_are_deterministic():
    assert str(check_eps_loss(eps_loss)) == str(check_eps_loss(eps_loss))
    assert str(check_ddim_step(ddim)) == str(check_ddim_step(ddim))
