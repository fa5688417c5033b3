"""Checkers for chapter 5 (the diffusion U-Net), and a reference for self-attention.

The build-it exercises run code you write against the package's own (each returns one line
of :class:`~unet_edu.exercises.feedback.Feedback`):

* :func:`check_q_sample` -- the forward process, ``x_t`` from ``x_0``, ``t`` and the noise;
* :func:`check_eps_loss` -- the training loss: draw ``t`` and the noise, predict, compare;
* :func:`check_ddim_step` -- one DDIM step with ``eta``, the clean estimate clipped;
* :func:`check_guided_eps` -- classifier-free guidance's combination of two predictions.

:func:`reference_self_attention` recomputes what a :class:`~unet_edu.blocks.SelfAttention`
layer must output, position by position, from the layer's own weights: for each pixel ``i``,
softmax over all pixels ``j`` of ``q_i . k_j / sqrt(d)``, then the weighted mean of the
``v_j``.  :func:`attends_over_positions` compares any forward function with it; that is the
test which tells a correct attention layer from one that attends over channels.
"""

from __future__ import annotations

import math

import torch

from torch import nn

from ..blocks import ResBlock, SelfAttention
from ..diffusion import NoiseSchedule, ddim_step, ddim_timesteps, guided_eps, q_sample
from ..models import DiffusionUNet
from . import verdict
from .feedback import (Verdict, checker, close, hint, passed, problem, require_callable,
                       require_signature, require_tensor, run)

__all__ = [
    "attention_weights",
    "reference_self_attention",
    "attends_over_positions",
    "check_resblock_params",
    "check_attention_entries",
    "check_ddim_timesteps",
    "check_attention_forward",
    "check_q_sample",
    "check_eps_loss",
    "check_ddim_step",
    "check_guided_eps",
]


def _qkv_per_head(layer: SelfAttention, x: torch.Tensor):
    b, c, h, w = x.shape
    heads, d = layer.num_heads, c // layer.num_heads
    tokens = layer.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C): one token per pixel
    q, k, v = layer.qkv(tokens).chunk(3, dim=-1)
    split = lambda z: z.reshape(b, h * w, heads, d).permute(0, 2, 1, 3)  # (B, heads, HW, d)
    return split(q), split(k), split(v), d


@torch.no_grad()
def attention_weights(layer: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    """The ``(B, heads, HW, HW)`` attention matrix of ``layer`` on ``x``: row ``i`` is pixel ``i``'s
    weights over all pixels, and every row sums to 1."""
    q, k, _, d = _qkv_per_head(layer, x)
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)


@torch.no_grad()
def reference_self_attention(layer: SelfAttention,
                             x: torch.Tensor) -> torch.Tensor:
    """What ``layer(x)`` must be, computed pixel by pixel (slow and plain,
    on purpose)."""
    b, c, h, w = x.shape
    q, k, v, d = _qkv_per_head(layer, x)
    out = torch.zeros_like(q)
    for i in range(h * w):  # one query pixel at a time
        # (B, heads, HW): pixel i vs every pixel
        scores = (q[:, :, i:i + 1, :] * k).sum(-1) / math.sqrt(d)
        weights = torch.softmax(scores, dim=-1)
        out[:, :, i, :] = (weights.unsqueeze(-1) * v).sum(2)
    merged = out.permute(0, 2, 1, 3).reshape(b, h * w, c)
    return x + layer.proj(merged).transpose(1, 2).reshape(b, c, h, w)


@torch.no_grad()
def attends_over_positions(forward, layer: SelfAttention, x: torch.Tensor, atol: float = 1e-4) -> bool:
    """True when ``forward(layer, x)`` equals :func:`reference_self_attention` (within ``atol``)."""
    out = forward(layer, x)
    ref = reference_self_attention(layer, x)
    return out.shape == ref.shape and bool(torch.allclose(out, ref, atol=atol))


# --------------------------------------------------------------------------------------------
# Exercise checkers
# --------------------------------------------------------------------------------------------
def check_resblock_params(in_channels: int, out_channels: int, emb_dim: int, answer: int,
                          norm_groups: int = 8) -> None:
    """How many parameters has ``ResBlock(in_channels, out_channels, emb_dim)`` (scale-shift)?"""
    block = ResBlock(in_channels, out_channels, emb_dim, norm_groups=norm_groups)
    right = sum(p.numel() for p in block.parameters())
    verdict(
        int(answer) == right,
        f"ResBlock({in_channels}->{out_channels}, emb {emb_dim}) has {right:,} parameters.",
        "count two 3x3 convolutions (with biases), two GroupNorms (a scale and a shift per channel), "
        "the Linear from the embedding to 2 x out_channels (scale and shift), and a 1x1 skip "
        "convolution if the channel count changes.",
    )


def check_attention_entries(height: int, width: int, num_heads: int, answer: int, channels: int = 32) -> None:
    """How many numbers has the attention matrix of one image at ``height x width`` (all heads)?"""
    layer = SelfAttention(channels, num_heads, norm_groups=8)
    right = attention_weights(layer, torch.randn(1, channels, height, width)).numel()
    verdict(
        int(answer) == right,
        f"{num_heads} heads x ({height * width} x {height * width}) = {right:,} attention weights per image.",
        "every pixel attends to every pixel, in each head: the matrix is (H*W) x (H*W) per head.",
    )


def check_ddim_timesteps(steps: int, answer, num_steps: int = 1000,
                         spacing: str = "trailing") -> None:
    """Which timesteps does DDIM with ``steps`` steps and ``spacing`` visit (largest first)?"""
    right = ddim_timesteps(num_steps, steps, spacing)
    ok = [int(a) for a in answer] == right
    how = {
        "trailing": f"count down from {num_steps - 1} in strides of {num_steps}/{steps}, "
                    "rounding each point",
        "linspace": f"spread {steps} points evenly over 0..{num_steps - 1}, both ends "
                    "included, and round them",
        "leading": f"take the multiples of {num_steps // steps} from 0",
    }[spacing]
    verdict(ok, f"DDIM-{steps} with {spacing} spacing visits {right}.",
            f"{how}; list them from the largest down.")


def check_attention_forward(forward) -> None:
    """Does ``forward(layer, x)`` compute a SelfAttention layer's output, attending over pixels?"""
    torch.manual_seed(0)
    layer = SelfAttention(16, num_heads=2, norm_groups=4)
    x = torch.randn(2, 16, 5, 6)
    try:
        out = forward(layer, x)
    except Exception as err:  # the learner's code failed: say how
        verdict(False, "", f"your function raised {type(err).__name__}: {err}")
        return
    if tuple(out.shape) != tuple(x.shape):
        verdict(False, "", f"the output must have the input's shape {tuple(x.shape)}, "
                f"got {tuple(out.shape)}")
        return
    verdict(
        attends_over_positions(forward, layer, x),
        "your layer matches the pixel-by-pixel reference: it attends over positions.",
        "right shape, wrong numbers. Lay the tokens out as (B, heads, H*W, head_dim) so that q @ k^T is "
        "(H*W) x (H*W), softmax over the last axis (the pixels), and add the input back at the end.",
    )


# --------------------------------------------------------------------------------------------
# Build-it exercises
# --------------------------------------------------------------------------------------------
_Q = "my_q_sample"
_LOSS = "my_eps_loss"
_STEP = "my_ddim_step"
_GUIDE = "my_guided_eps"


def _q_variant(schedule: NoiseSchedule, x0, t, noise, change: str = ""):
    """The forward process with one deliberate change (a mistake signature)."""
    t = t.long()
    if change == "alphas":
        a = schedule.alphas[t]
    elif change == "prev":
        a = schedule.alphas_cumprod_prev[t]
    elif change == "minus-one":
        a = schedule.alphas_cumprod[t - 1]
    elif change == "first-t":
        a = schedule.alphas_cumprod[t[:1]].expand(len(t))
    else:
        a = schedule.alphas_cumprod[t]
    a = a.to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
    if change == "no-sqrt":
        return a * x0 + (1 - a) * noise
    if change == "swap":
        return (1 - a).sqrt() * x0 + a.sqrt() * noise
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


_Q_MISTAKES = (
    ("alphas", "schedule.alphas[t] is one step's share of signal; the jump from x0 straight "
               "to step t needs the product alpha_bar_t = schedule.alphas_cumprod[t]"),
    ("prev", "t is 0-based: alpha_bar_t is schedule.alphas_cumprod[t], not alphas_cumprod_prev "
             "(that is alpha_bar_{t-1})"),
    ("minus-one", "t is 0-based: alpha_bar_t is schedule.alphas_cumprod[t], not [t - 1]"),
    ("no-sqrt", "the coefficients are square roots, sqrt(alpha_bar) and sqrt(1 - alpha_bar): "
                "variances add, standard deviations do not"),
    ("swap", "the coefficients are swapped: sqrt(alpha_bar) multiplies x0 (the signal), "
             "sqrt(1 - alpha_bar) the noise"),
    ("first-t", "every image has its own t: gather alphas_cumprod[t] for the whole batch, not "
                "only t[0]"),
)


@checker
def check_q_sample(my_q_sample):
    """Does ``my_q_sample(schedule, x0, t, noise)`` jump to step ``t`` of the forward process?

    ``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise`` with ``alpha_bar_t =
    schedule.alphas_cumprod[t]``, one ``t`` per image (shape ``(B,)``), returned in ``x0``'s
    dtype: what :func:`~unet_edu.diffusion.q_sample` computes.  Three cases: t = 0 and T - 1,
    a batch of one, the linear and the cosine schedules, and a 50-step schedule.
    """
    params = "(schedule, x0, t, noise)"
    require_callable(my_q_sample, _Q, params)
    gen = torch.Generator().manual_seed(7)
    cases = [(NoiseSchedule("cosine"), (4, 1, 7, 9), [0, 1, 500, 999]),
             (NoiseSchedule("linear"), (1, 1, 5, 5), [999]),
             (NoiseSchedule("cosine", 50), (3, 2, 4, 4), [0, 49, 25])]
    require_signature(my_q_sample, _Q, (cases[0][0], torch.zeros(1, 1, 2, 2),
                                        torch.zeros(1, dtype=torch.long),
                                        torch.zeros(1, 1, 2, 2)), params)
    for schedule, shape, steps in cases:
        x0 = torch.rand(shape, generator=gen) * 2 - 1
        noise = torch.randn(shape, generator=gen)
        t = torch.tensor(steps)
        label = f"{schedule.kind} schedule of {schedule.num_steps} steps, t = {steps}"
        ran = run(my_q_sample, schedule, x0.clone(), t.clone(), noise.clone(), what=_Q)
        if not ran.ok:
            if "must match the size" in ran.message or "broadcast" in ran.message:
                raise Verdict(hint("alphas_cumprod[t] has shape (B,): reshape it to (B, 1, 1, "
                                   "1) (.view(-1, 1, 1, 1)) so that each image gets its own "
                                   "coefficient"))
            raise Verdict(ran.failure(_Q, f"it failed for {label}"))
        y = require_tensor(ran.value, _Q, shape, "x_t has the shape of x0")
        want = q_sample(schedule, x0, t, noise)
        if close(y, want):
            if y.dtype != x0.dtype:
                raise Verdict(hint(f"x_t is {y.dtype} but x0 is {x0.dtype}: the schedule's "
                                   f"tensors are float64, so cast the coefficients, "
                                   f".to(x0.dtype), or the network will refuse x_t"))
            continue
        for change, text in _Q_MISTAKES:
            if close(y, _q_variant(schedule, x0, t, noise, change)):
                raise Verdict(hint(text))
        raise Verdict(hint(f"for {label} your x_t differs: x_t = sqrt(alpha_bar_t) x0 + "
                           f"sqrt(1 - alpha_bar_t) noise, alpha_bar_t = "
                           f"schedule.alphas_cumprod[t]"))
    return passed("your forward process equals q_sample for t = 0 and T - 1, a batch of one, "
                  "the linear and cosine schedules and a 50-step schedule")


class _Probe(nn.Module):
    """A stand-in noise predictor that records what it is given and returns 0.5 x_t."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.calls: list = []

    def forward(self, x_t, t=None, *args, **kwargs):
        self.calls.append((x_t.detach().clone(),
                           t.detach().clone() if isinstance(t, torch.Tensor) else t))
        return self.scale * x_t


@checker
def check_eps_loss(my_eps_loss):
    """Is ``my_eps_loss(model, schedule, x0, generator)`` the DDPM training loss?

    For each image draw a timestep ``t`` uniformly from ``0 .. T - 1`` and standard normal
    noise (both from ``generator``), build ``x_t`` by the forward process, and return the mean
    squared error between ``model(x_t, t)`` and the noise: one number, still attached to the
    graph so that training can back-propagate it.  The checker hands your function a recording
    model: from what the model receives it reads back the ``t`` you drew and the noise you
    used, so it can tell a wrong target, a wrong range of ``t`` or a wrong ``x_t`` apart.
    """
    params = "(model, schedule, x0, generator)"
    require_callable(my_eps_loss, _LOSS, params)
    schedule = NoiseSchedule("cosine", 10)
    require_signature(my_eps_loss, _LOSS, (_Probe(), schedule, torch.zeros(1, 1, 2, 2),
                                           torch.Generator()), params)
    x0 = torch.rand(256, 1, 4, 4, generator=torch.Generator().manual_seed(8)) * 2 - 1
    drawn = []
    for seed, batch in ((0, x0), (1, x0[:1]), (2, x0), (3, x0), (4, x0), (5, x0)):
        probe = _Probe()
        gen = torch.Generator().manual_seed(seed)
        ran = run(my_eps_loss, probe, schedule, batch.clone(), gen, what=_LOSS)
        if not ran.ok:
            raise Verdict(ran.failure(_LOSS))
        loss = ran.value
        if isinstance(loss, (float, int)):
            raise Verdict(hint("return the loss tensor, not a Python number (.item()): "
                               "training back-propagates it"))
        loss = require_tensor(loss, _LOSS)
        if loss.numel() != 1:
            raise Verdict(hint(f"your loss has shape {tuple(loss.shape)}: average it to one "
                               f"number (F.mse_loss does), as fit expects"))
        if not loss.requires_grad:
            raise Verdict(hint("your loss is detached from the model: no .detach(), .item() "
                               "or torch.no_grad() inside, so that training can "
                               "back-propagate it"))
        if not probe.calls:
            raise Verdict(hint("the model was never called: predict the noise with "
                               "model(x_t, t)"))
        x_t, t = probe.calls[-1]
        b = len(batch)
        if t is None:
            raise Verdict(hint("pass the timesteps to the model, model(x_t, t): a noise "
                               "predictor must know how noisy x_t is"))
        if t.is_floating_point():
            raise Verdict(hint("draw integer timesteps, torch.randint(0, T, (B,), "
                               "generator=generator); a float t indexes no schedule entry"))
        if tuple(t.shape) != (b,):
            raise Verdict(hint(f"the model received t of shape {tuple(t.shape)}: draw one "
                               f"timestep per image, shape ({b},)"))
        if t.min() < 0 or t.max() > schedule.num_steps - 1:
            raise Verdict(hint(f"t must lie in 0..T-1 (0..{schedule.num_steps - 1} here); "
                               f"yours reached {int(t.min())}..{int(t.max())}: "
                               f"torch.randint(0, T, ...) excludes its upper bound"))
        if b > 1 and bool((t == t[0]).all()):
            raise Verdict(hint("every image got the same t: draw one per image, "
                               "torch.randint(0, T, (B,), generator=generator)"))
        if tuple(x_t.shape) != tuple(batch.shape):
            raise Verdict(hint(f"the model received x_t of shape {tuple(x_t.shape)}; it "
                               f"must have x0's shape {tuple(batch.shape)}"))
        if x_t.dtype != batch.dtype:
            raise Verdict(hint(f"the model received a {x_t.dtype} x_t for {batch.dtype} "
                               f"images: the schedule's tensors are float64, so cast the "
                               f"coefficients to x0's dtype (.to(x0.dtype))"))
        drawn.append(t)
        a = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = ((x_t.double() - a.sqrt() * batch.double()) / (1 - a).sqrt())
        out = 0.5 * x_t.double()
        value = float(loss.detach())
        if b > 1:
            slope = float(((eps - eps.mean()) * (batch - batch.mean())).mean()
                          / batch.double().var())
            if abs(slope) > 0.15:
                raise Verdict(hint("x_t is not sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) "
                                   "eps for the t you gave the model: build it with the same "
                                   "t (check your forward process, alphas_cumprod[t])"))
            if abs(float(eps.mean())) > 0.15 or abs(float(eps.std()) - 1) > 0.15:
                raise Verdict(hint(f"the noise is not standard normal (mean "
                                   f"{float(eps.mean()):.2f}, sd {float(eps.std()):.2f}): draw "
                                   f"it with torch.randn, not torch.rand"))
        want = float(((out - eps) ** 2).mean())
        if abs(value - want) <= 1e-4 * max(1.0, want):
            continue
        if abs(value - float(((out - batch) ** 2).mean())) <= 1e-4 * max(1.0, value):
            raise Verdict(hint("the target is the noise eps that went into x_t, not the clean "
                               "image x0: F.mse_loss(model(x_t, t), noise)"))
        if abs(value - float(((out - x_t) ** 2).mean())) <= 1e-4 * max(1.0, value):
            raise Verdict(hint("the target is the noise eps, not x_t itself"))
        if abs(value - float(((out - eps) ** 2).sum())) <= 1e-4 * max(1.0, value):
            raise Verdict(hint("average the squared errors (F.mse_loss's default), do not sum "
                               "them: a sum grows with the batch and the image size"))
        raise Verdict(hint(f"your loss is {value:.4f} where the mean squared error between "
                           f"model(x_t, t) and the noise is {want:.4f}"))
    seen = torch.cat(drawn)
    if int(seen.min()) != 0 or int(seen.max()) != schedule.num_steps - 1:
        raise Verdict(hint(f"over {len(seen)} draws your t never reached "
                           f"{'0' if int(seen.min()) != 0 else schedule.num_steps - 1}: "
                           f"draw from the whole range 0..T-1, torch.randint(0, T, (B,))"))
    again = [float(run(my_eps_loss, _Probe(), schedule, x0.clone(),
                       torch.Generator().manual_seed(0), what=_LOSS).value) for _ in range(2)]
    if again[0] != again[1]:
        raise Verdict(hint("the same seeded generator gave two different losses: draw t and "
                           "the noise from `generator` (torch.randint(..., "
                           "generator=generator), torch.randn(x0.shape, "
                           "generator=generator); torch.randn_like takes no generator)"))
    return passed("your loss draws t over 0..T-1 and standard normal noise, builds x_t, and "
                  "returns the mean squared error to the noise, reproducibly from the "
                  "generator (batches of 256 and 1)")


def _ddim_variant(x_t, eps, a_bar, a_prev, eta=0.0, noise=None, change=""):
    """One DDIM step with one deliberate change (a mistake signature)."""
    a_x0 = a_prev if change == "x0-with-prev" else a_bar
    x0 = (x_t - math.sqrt(1 - a_x0) * eps) / math.sqrt(a_x0)
    if change != "no-clip":
        x0 = x0.clamp(-1, 1)
        if change != "keep-eps":
            eps = (x_t - math.sqrt(a_bar) * x0) / math.sqrt(1 - a_bar)
    inner = (1 - a_prev) / (1 - a_bar) * (1 - a_bar / a_prev)
    e = 1.0 if (change == "no-eta" and noise is not None) else eta
    sigma = e * (inner if change == "sigma-no-sqrt" else math.sqrt(inner))
    a_mix = a_bar if change == "mix-with-a" else a_prev  # the coefficient of x0_hat
    direction = 1 - a_prev if change == "no-sigma2" else 1 - a_prev - sigma**2
    x_prev = math.sqrt(a_mix) * x0 + math.sqrt(max(direction, 0.0)) * eps
    if noise is not None and sigma > 0:
        x_prev = x_prev + (eta if change == "eta-noise" else sigma) * noise
    return x_prev


_DDIM_MISTAKES = (
    ("mix-with-a", "you used sqrt(alpha_bar_t) where the step needs sqrt(alpha_bar_prev): "
                   "x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps_hat"),
    ("x0-with-prev", "you divided by sqrt(alpha_bar_prev) where the clean estimate needs "
                     "sqrt(alpha_bar_t): x0_hat = (x_t - sqrt(1 - a_bar) eps) / sqrt(a_bar)"),
    ("no-clip", "clip the clean estimate to the data's range, x0_hat.clamp(-1, 1), and then "
                "recompute eps_hat from it"),
    ("keep-eps", "after clipping x0_hat, recompute eps_hat = (x_t - sqrt(a_bar) x0_hat) / "
                 "sqrt(1 - a_bar), so that the two stay consistent"),
    ("no-sigma2", "the direction's coefficient is sqrt(1 - a_prev - sigma^2): the fresh noise "
                  "takes sigma^2 of the variance"),
    ("sigma-no-sqrt", "sigma = eta * sqrt((1 - a_prev) / (1 - a_bar)) * sqrt(1 - a_bar / "
                      "a_prev): both square roots"),
    ("no-eta", "sigma carries the factor eta: eta = 0 is deterministic, eta = 1 is DDPM"),
    ("eta-noise", "the fresh noise is multiplied by sigma, not by eta"),
)


@checker
def check_ddim_step(my_ddim_step):
    """Is ``my_ddim_step(x_t, eps, a_bar, a_bar_prev, eta, noise)`` one DDIM step?

    ``a_bar`` and ``a_bar_prev`` are Python floats, ``alpha_bar`` at this step and at the next
    one visited (1 after the last); ``noise`` is standard normal (``None`` when ``eta = 0``).
    Estimate ``x0_hat = (x_t - sqrt(1 - a_bar) eps) / sqrt(a_bar)``, clip it to [-1, 1] and
    recompute ``eps`` from it; ``sigma = eta sqrt((1 - a_prev) / (1 - a_bar)) sqrt(1 - a_bar /
    a_prev)``; return ``sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps + sigma noise``:
    :func:`~unet_edu.diffusion.ddim_step` with ``clip_x0=True``, whose ``x_prev`` you return.
    Six cases: with and without clipping, the noisiest step, the last step (``a_prev = 1``),
    ``eta`` of 0, 0.5 and 1, and a batch of one.
    """
    params = "(x_t, eps, a_bar, a_bar_prev, eta, noise)"
    require_callable(my_ddim_step, _STEP, params)
    require_signature(my_ddim_step, _STEP, (torch.zeros(1), torch.zeros(1), 0.5, 0.7, 0.0,
                                            None), params)
    sched = NoiseSchedule("cosine")
    abar = sched.alphas_cumprod
    gen = torch.Generator().manual_seed(9)
    cases = [("a middle step, no clipping", 0.3, 0.5, 0.7, 0.0, False, (2, 1, 6, 6)),
             ("a middle step with clipping", 1.5, 0.5, 0.7, 0.0, False, (2, 1, 6, 6)),
             ("the noisiest step", 1.0, float(abar[999]), float(abar[949]), 0.0, False,
              (2, 1, 6, 6)),
             ("the last step (a_prev = 1)", 1.0, float(abar[40]), 1.0, 0.0, False,
              (2, 1, 6, 6)),
             ("eta = 1 between neighbouring steps", 1.0, float(abar[500]), float(abar[499]),
              1.0, True, (2, 1, 6, 6)),
             ("eta = 0.5, a batch of one", 0.6, 0.3, 0.6, 0.5, True, (1, 1, 5, 7))]
    for label, size, a, a_prev, eta, noisy, shape in cases:
        x_t = size * torch.randn(shape, generator=gen)
        eps = torch.randn(shape, generator=gen)
        noise = torch.randn(shape, generator=gen) if noisy else None
        args = (x_t.clone(), eps.clone(), a, a_prev, eta,
                None if noise is None else noise.clone())
        ran = run(my_ddim_step, *args, what=_STEP)
        if not ran.ok:
            if "must be Tensor" in ran.message:
                raise Verdict(hint("a_bar and a_bar_prev are Python floats: take their square "
                                   "roots with math.sqrt (torch.sqrt wants a tensor)"))
            if noise is None and isinstance(ran.error, TypeError):
                raise Verdict(hint("with eta = 0, sigma = 0 and there is no noise term: "
                                   "noise may be None, add sigma * noise only when sigma > 0"))
            if a_prev == 1.0 and isinstance(ran.error, (ZeroDivisionError, ValueError)):
                raise Verdict(ran.failure(_STEP, "a_prev = 1 after the last step: sigma is 0 "
                                                 "there, and 1 - a_prev - sigma^2 is 0"))
            raise Verdict(ran.failure(_STEP, f"it failed on {label}"))
        y = ran.value
        if isinstance(y, tuple):
            raise Verdict(problem(f"`{_STEP}` returned a tuple; return x_prev only (the "
                                  f"package's ddim_step returns (x_prev, x0_hat))"))
        y = require_tensor(y, _STEP, shape, "x_prev has the shape of x_t")
        want = ddim_step(x_t, eps, a, a_prev, eta, noise, clip_x0=True)[0]
        if not torch.isfinite(y).all():
            raise Verdict(hint(f"NaN or infinite values on {label}: take the square root of "
                               f"max(1 - a_prev - sigma^2, 0), which is 0 at the last step"))
        if close(y, want, atol=1e-4):
            continue
        for change, text in _DDIM_MISTAKES:
            if close(y, _ddim_variant(x_t, eps, a, a_prev, eta, noise, change), atol=1e-4):
                raise Verdict(hint(text))
        raise Verdict(hint(f"on {label} your x_prev differs from the DDIM step: x0_hat, "
                           f"clipped; eps recomputed; sigma; then sqrt(a_prev) x0_hat + "
                           f"sqrt(1 - a_prev - sigma^2) eps + sigma noise"))
    return passed("your step equals ddim_step on six cases: clipping on and off, the noisiest "
                  "and the last step, eta 0, 0.5 and 1, a batch of one")


def _guided_variant(model, x_t, t, y, scale, change=""):
    """Guidance with one deliberate change (a mistake signature)."""
    null = torch.zeros_like(y) if change == "null-zero" else \
        torch.full_like(y, model.config["num_classes"])
    cond = model(x_t, t, null if change == "no-label" else y)
    uncond = model(x_t, t, null)
    if change == "swap":
        return cond + scale * (uncond - cond)
    if change == "plus-one":
        return cond + scale * (cond - uncond)
    if change == "no-base":
        return scale * (cond - uncond)
    if change == "cond-only":
        return cond
    return uncond + scale * (cond - uncond)


_GUIDE_MISTAKES = (
    ("null-zero", "the 'no label' class is model.config['num_classes'] (10 for digits); "
                  "label 0 is the digit zero"),
    ("swap", "conditional and unconditional are swapped: eps = eps_uncond + scale * (eps_cond "
             "- eps_uncond), so that scale = 0 ignores the label"),
    ("plus-one", "at scale = 1 the result must be the plain conditional prediction; you used "
                 "Ho and Salimans' form with w = scale, the book's scale is their 1 + w: "
                 "eps_uncond + scale * (eps_cond - eps_uncond)"),
    ("no-base", "add the unconditional prediction back: eps_uncond + scale * (eps_cond - "
                "eps_uncond)"),
    ("cond-only", "use the scale: eps_uncond + scale * (eps_cond - eps_uncond)"),
    ("no-label", "the conditional prediction needs the labels: model(x_t, t, y)"),
)


@checker
def check_guided_eps(my_guided_eps):
    """Does ``my_guided_eps(model, x_t, t, y, scale)`` combine the two predictions?

    Predict the noise with the labels ``y`` and with the null label (``num_classes``, the
    class the model was trained to read as "no label"), and return ``eps_uncond + scale *
    (eps_cond - eps_uncond)``, as :func:`~unet_edu.diffusion.guided_eps` does.  A small
    class-conditional :class:`~unet_edu.models.DiffusionUNet` is tried at scales 0, 1, 2 and
    7.5, at t = 10, 500 and 999, and on a batch of one.
    """
    params = "(model, x_t, t, y, scale)"
    require_callable(my_guided_eps, _GUIDE, params)
    torch.manual_seed(10)
    model = DiffusionUNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                          norm_groups=4, num_heads=2, num_classes=10).eval()
    require_signature(my_guided_eps, _GUIDE, (model, torch.zeros(1, 1, 8, 8),
                                              torch.zeros(1, dtype=torch.long),
                                              torch.zeros(1, dtype=torch.long), 2.0), params)
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(3, 1, 8, 8, generator=gen)
    t, y = torch.tensor([10, 500, 999]), torch.tensor([3, 0, 7])
    cases = [(x, t, y, 2.0), (x, t, y, 0.0), (x, t, y, 1.0),
             (x[:1], torch.tensor([250]), torch.tensor([9]), 7.5)]
    for x_t, tt, yy, scale in cases:
        label = f"scale {scale:g}, batch of {len(x_t)}"
        with torch.no_grad():
            ran = run(my_guided_eps, model, x_t.clone(), tt.clone(), yy.clone(), scale,
                      what=_GUIDE)
            if not ran.ok:
                raise Verdict(ran.failure(_GUIDE, f"it failed at {label}"))
            out = require_tensor(ran.value, _GUIDE, tuple(x_t.shape),
                                 "one noise prediction per image")
            want = guided_eps(model, x_t, tt, yy, scale)
            if close(out, want, atol=1e-4):
                continue
            for change, text in _GUIDE_MISTAKES:
                if close(out, _guided_variant(model, x_t, tt, yy, scale, change), atol=1e-4):
                    raise Verdict(hint(text))
        raise Verdict(hint(f"at {label} the result differs: eps_uncond + scale * (eps_cond - "
                           f"eps_uncond), with eps_uncond from the null label num_classes"))
    return passed("your guidance equals guided_eps at scales 0, 1, 2 and 7.5 and on a batch "
                  "of one")
