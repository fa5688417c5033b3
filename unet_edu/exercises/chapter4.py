"""Chapter 4 — telling the network the time.  Checkers for the exercises.

The arithmetic exercises (``check_slowest_period``, ...) compute the right number with the
package (never a stored number), compare it with yours, and print a verdict (they return
None).  The build-it ones run code you write:

* :func:`check_time_embedding` -- your sinusoidal embedding of the timestep, against
  :class:`~unet_edu.blocks.SinusoidalTimeEmbedding`;
* :func:`check_resblock_forward` -- your forward pass of a
  :class:`~unet_edu.blocks.ResBlock`, with the time entering by scale and shift.

They return one line of :class:`~unet_edu.exercises.feedback.Feedback`.
:func:`diffusion_unet_with` puts both into a (trained) :class:`~unet_edu.models.DiffusionUNet`.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from . import verdict
from .feedback import (ReaderModule, Verdict, checker, close, hint, passed,
                       replace_modules, require_callable, require_signature, require_tensor,
                       run)
from ..blocks import ResBlock, SinusoidalTimeEmbedding
from ..diffusion import NoiseSchedule
from ..models import count_parameters

__all__ = ["slowest_period", "snr_crossing", "check_slowest_period", "check_snr_crossing",
           "check_time_params", "embedding_variant", "check_time_embedding",
           "check_resblock_forward", "diffusion_unet_with"]


def slowest_period(dim: int, max_period: float = 10000.0) -> float:
    """Period, in timesteps, of the slowest sine of :class:`SinusoidalTimeEmbedding`."""
    return 2 * math.pi / float(SinusoidalTimeEmbedding(dim, max_period).freqs.min())


def snr_crossing(kind: str, num_steps: int = 1000) -> int:
    """The first (0-based) timestep at which the signal-to-noise ratio drops below 1."""
    snr = NoiseSchedule(kind, num_steps).snr()
    return int((snr < 1).nonzero()[0])


def check_slowest_period(dim: int, answer: float) -> None:
    """Your period (in steps) of the slowest channel pair of a ``dim``-dimensional embedding."""
    right = slowest_period(dim)
    ok = abs(float(answer) - right) <= 0.01 * right
    verdict(ok, f"the slowest pair turns once every {right:,.0f} steps.",
            "the slowest frequency is 10000 ** (-(dim/2 - 1) / (dim/2)); a sine of "
            "frequency w repeats every 2*pi / w steps.")


def check_snr_crossing(kind: str, answer: int) -> None:
    """Your first timestep where the ``kind`` schedule's SNR falls below 1 (within 1 step)."""
    right = snr_crossing(kind)
    verdict(abs(int(answer) - right) <= 1, f"SNR < 1 from t = {right} on ({kind} schedule).",
            "SNR = alpha_bar / (1 - alpha_bar) < 1 exactly when alpha_bar < 1/2: look at "
            "NoiseSchedule(kind).alphas_cumprod.")


def check_time_params(out_channels: int, emb_dim: int, mode: str, answer: int) -> None:
    """Your number of parameters that turn the embedding into this block's ``mode`` conditioning
    (``"scale_shift"`` or ``"add"``) for a ResBlock with ``out_channels`` channels."""
    block = ResBlock(out_channels, out_channels, emb_dim, norm_groups=1, time_mode=mode)
    right = count_parameters(block.emb_proj)
    verdict(int(answer) == right, f"{right:,} parameters in the block's embedding projection.",
            "a Linear layer from a to b features has a*b weights and b biases; scale-shift "
            "needs two numbers per channel (gamma and beta), addition one.")


# --------------------------------------------------------------------------------------------
# Build-it exercises
# --------------------------------------------------------------------------------------------
_EMBED = "my_time_embedding"
_BLOCK = "my_resblock_forward"


def embedding_variant(t: torch.Tensor, dim: int, max_period: float = 10000.0,
                      change: str = "") -> torch.Tensor:
    """The sinusoidal embedding with one deliberate change, for recognising a reader's slip.

    ``""`` is the package's embedding; ``"swap"`` puts the cosines first, ``"interleave"``
    alternates sin and cos, ``"half-1"`` divides the exponent by ``dim/2 - 1`` (the DDPM code's
    convention), ``"rising"`` makes the frequencies grow, ``"fixed-period"`` ignores
    ``max_period`` (always 10000).
    """
    half = dim // 2
    period = 10000.0 if change == "fixed-period" else max_period
    steps = torch.arange(half, dtype=torch.float64)
    scale = (half - 1) if change == "half-1" else half
    sign = 1.0 if change == "rising" else -1.0
    freqs = torch.exp(sign * math.log(period) * steps / scale)
    angles = t.double()[:, None] * freqs[None, :]
    if change == "interleave":
        return torch.stack([angles.sin(), angles.cos()], dim=2).reshape(len(t), dim)
    parts = [angles.cos(), angles.sin()] if change == "swap" else [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1)


_EMBED_MISTAKES = (
    ("swap", "the sin and cos halves are swapped: the sines come first, then the cosines"),
    ("interleave", "you interleaved sin and cos (sin, cos, sin, cos, ...); concatenate them "
                   "instead: all sines, then all cosines, torch.cat([sin, cos], dim=1)"),
    ("half-1", "you divided the exponent by dim/2 - 1, the DDPM code's convention (its slowest "
               "frequency is exactly 1/max_period); the package divides by dim/2: "
               "w_k = max_period ** (-k / (dim/2))"),
    ("rising", "your frequencies rise; they must fall from 1 (k = 0) towards 1/max_period: "
               "w_k = max_period ** (-k / (dim/2)), a minus sign in the exponent"),
    ("fixed-period", "use the max_period argument instead of a fixed 10000"),
)


@checker
def check_time_embedding(my_time_embedding):
    """Does ``my_time_embedding(t, dim, max_period)`` compute the sinusoidal embedding?

    ``t`` holds one timestep per image, shape ``(B,)`` (integers or floats); the answer is a
    ``(B, dim)`` float32 tensor ``[sin(t w_0) ... sin(t w_{h-1}), cos(t w_0) ... cos(t
    w_{h-1})]`` with ``h = dim / 2`` and ``w_k = max_period ** (-k / h)``, as
    :class:`~unet_edu.blocks.SinusoidalTimeEmbedding` computes it.  Five cases: t = 0 and
    T - 1, a batch of one, float timesteps, the smallest size (dim = 2), and another
    ``max_period``.
    """
    params = "(t, dim, max_period)"
    require_callable(my_time_embedding, _EMBED, params)
    require_signature(my_time_embedding, _EMBED, (torch.zeros(1), 2, 10000.0), params)
    cases = [(torch.tensor([0, 1, 2, 10, 500, 999]), 8, 10000.0),
             (torch.arange(0, 1000, 7), 64, 10000.0),
             (torch.tensor([999]), 128, 10000.0),
             (torch.tensor([0.0, 0.5, 3.25]), 2, 10000.0),
             (torch.tensor([5, 50, 400]), 16, 1000.0)]
    for t, dim, period in cases:
        label = f"t of shape {tuple(t.shape)}, dim={dim}, max_period={period:g}"
        ran = run(my_time_embedding, t.clone(), dim, period, what=_EMBED)
        if not ran.ok:
            if dim == 2 and isinstance(ran.error, ZeroDivisionError):
                raise Verdict(hint(_EMBED_MISTAKES[2][1] + "; with dim = 2 that divides by "
                                                           "zero"))
            if "must match the size" in ran.message or "broadcast" in ran.message:
                raise Verdict(hint("t has shape (B,) and the frequencies (dim/2,): make a "
                                   "(B, dim/2) grid of angles, t[:, None] * freqs[None, :]"))
            raise Verdict(ran.failure(_EMBED, f"it failed for {label}"))
        y = ran.value
        if isinstance(y, torch.Tensor) and tuple(y.shape) == (len(t), 2 * dim):
            raise Verdict(hint(f"your embedding has {2 * dim} channels for dim={dim}: dim "
                               f"counts sines and cosines together, so use dim // 2 "
                               f"frequencies"))
        y = require_tensor(y, _EMBED, (len(t), dim), "one row of dim numbers per timestep")
        want = SinusoidalTimeEmbedding(dim, period)(t)
        if not torch.isfinite(y).all():
            raise Verdict(hint(f"your embedding holds NaN or infinite values for {label}"
                               + ("; " + _EMBED_MISTAKES[2][1] if dim == 2 else "")))
        if close(y, want, atol=1e-4):
            if y.dtype != torch.float32:
                raise Verdict(hint(f"your embedding is {y.dtype}; return float32 (t.float()), "
                                   f"the dtype of the network's weights"))
            continue
        # Fast frequencies turn float32 rounding into large differences at large t, so the
        # slips are recognised on the small timesteps of a case when it has some.
        small = t.abs() <= 2 if bool((t.abs() <= 2).any()) else torch.ones_like(t, dtype=bool)
        for change, text in _EMBED_MISTAKES:
            if close(y[small], embedding_variant(t[small], dim, period, change), atol=2e-3):
                raise Verdict(hint(text))
        k = int((y.double() - want.double()).abs().amax(0).argmax())
        row = int((y.double() - want.double()).abs()[:, k].argmax())
        raise Verdict(hint(f"for {label}: at t = {float(t[row]):g}, channel {k} is "
                           f"{float(y[row, k]):.4f} where {float(want[row, k]):.4f} is "
                           f"expected; channel k < dim/2 is sin(t w_k), channel dim/2 + k is "
                           f"cos(t w_k), w_k = max_period ** (-k / (dim/2))"))
    return passed("your embedding equals SinusoidalTimeEmbedding for t = 0 and 999, a batch "
                  "of one, float t, dim = 2 to 128 and another max_period")


# -- the ResBlock's forward pass -----------------------------------------------------------
def _resblock_variant(block: ResBlock, x, emb, change: str = ""):
    """ResBlock's forward with one deliberate change (a mistake signature)."""
    h = block.conv1(F.silu(block.norm1(x)))
    gamma, beta = block.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)
    if change == "swap":
        gamma, beta = beta, gamma
    if change == "before-norm":
        h = block.norm2(h * (1 + gamma) + beta)
    else:
        h = block.norm2(h)
        if change == "gain":
            h = h * gamma + beta
        elif change == "shift-only":
            h = h + beta
        else:
            h = h * (1 + gamma) + beta
    h = block.conv2(block.dropout(h if change == "no-silu" else F.silu(h)))
    return h if change == "no-residual" else block.skip(x) + h


_RESBLOCK_MISTAKES = (
    ("before-norm", "you scaled and shifted before block.norm2: GroupNorm subtracts each "
                    "group's mean and divides by its spread, which undoes them; apply "
                    "h * (1 + gamma) + beta after norm2"),
    ("gain", "the gain is 1 + gamma, not gamma: a block whose gamma is 0 must leave the "
             "normalised h unchanged"),
    ("swap", "gamma and beta are swapped: the first half of block.emb_proj(emb) is gamma "
             "(the scale), the second half beta (the shift)"),
    ("shift-only", "only the shift arrived: scale-shift uses both halves of "
                   "block.emb_proj(emb), h * (1 + gamma) + beta"),
    ("no-silu", "SiLU comes after the scale-shift, before the dropout and conv2"),
    ("no-residual", "add the block's input back: return block.skip(x) + h"),
)


class _Calls(nn.Module):
    """A part of a block that writes its name to a shared log when called."""

    def __init__(self, name, module, log):
        super().__init__()
        self.name, self.module, self.log = name, module, log

    def forward(self, *args):
        self.log.append(self.name)
        return self.module(*args)


@checker
def check_resblock_forward(my_resblock_forward):
    """Does ``my_resblock_forward(block, x, emb)`` compute what ``block(x, emb)`` computes?

    ``block`` is a :class:`~unet_edu.blocks.ResBlock` with scale-shift conditioning; use its
    parts ``norm1``, ``conv1``, ``norm2``, ``emb_proj``, ``dropout``, ``conv2`` and ``skip``:
    ``h = conv1(SiLU(norm1(x)))``; ``gamma, beta`` = the two halves of ``emb_proj(emb)``,
    reshaped to ``(B, C, 1, 1)``; ``h = norm2(h) * (1 + gamma) + beta``;
    ``h = conv2(dropout(SiLU(h)))``; return ``skip(x) + h``.  Three blocks are tried: one with
    a group per channel (where a scale-shift before the norm is erased), one that changes the
    channel count (its skip is a 1x1 convolution), and a batch of three.
    """
    params = "(block, x, emb)"
    require_callable(my_resblock_forward, _BLOCK, params)
    torch.manual_seed(4)
    cases = [(ResBlock(8, 8, 16, norm_groups=8), (2, 8, 5, 7), 16),
             (ResBlock(4, 6, 16, norm_groups=2), (1, 4, 6, 9), 16),
             (ResBlock(8, 8, 12, norm_groups=4), (3, 8, 4, 5), 12)]
    require_signature(my_resblock_forward, _BLOCK,
                      (cases[0][0], torch.zeros(cases[0][1]), torch.zeros(2, 16)), params)
    gen = torch.Generator().manual_seed(6)
    for block, shape, emb_dim in cases:
        block.eval()
        x = torch.randn(shape, generator=gen)
        emb = 2 * torch.randn(shape[0], emb_dim, generator=gen)
        log: list = []
        twin = copy.deepcopy(block)
        for name in ("norm1", "conv1", "norm2", "emb_proj", "dropout", "conv2", "skip"):
            setattr(twin, name, _Calls(name, getattr(twin, name), log))
        twin.forward = twin.scale_shift = _refuse_forward
        label = (f"ResBlock({block.conv1.in_channels} -> {block.conv1.out_channels}) on x of "
                 f"shape {shape}")
        with torch.no_grad():
            ran = run(my_resblock_forward, twin, x.clone(), emb.clone(), what=_BLOCK)
            want = block(x, emb)
        if not ran.ok:
            if isinstance(ran.error, _UseTheParts):
                raise Verdict(hint("write the computation with the block's parts (norm1, "
                                   "conv1, norm2, emb_proj, conv2, skip) instead of calling "
                                   "block(x, emb) or block.scale_shift"))
            if "emb_proj" not in log:
                raise Verdict(ran.failure(_BLOCK, "turn the embedding into 2C numbers with "
                                                  "block.emb_proj(emb) first"))
            if "conv2" not in log and ("must match the size" in ran.message
                                       or "broadcast" in ran.message):
                raise Verdict(hint("gamma and beta are (B, C): reshape them to (B, C, 1, 1), "
                                   "e.g. block.emb_proj(emb)[:, :, None, None], so that they "
                                   "apply to every pixel of their channel"))
            if "conv2" in log and "skip" not in log and block.conv1.in_channels != \
                    block.conv1.out_channels:
                raise Verdict(hint("when the channel count changes, x must pass block.skip (a "
                                   "1x1 convolution) before the sum: block.skip(x) + h"))
            raise Verdict(ran.failure(_BLOCK, f"it failed on {label}"))
        if "emb_proj" not in log:
            raise Verdict(hint("the embedding never reached the block: gamma and beta are the "
                               "two halves of block.emb_proj(emb)"))
        y = require_tensor(ran.value, _BLOCK, tuple(want.shape),
                           "the block maps (B, C_in, H, W) to (B, C_out, H, W)")
        if close(y, want):
            continue
        with torch.no_grad():
            for change, text in _RESBLOCK_MISTAKES:
                if close(y, _resblock_variant(block, x, emb, change)):
                    raise Verdict(hint(text))
        raise Verdict(hint(f"on {label} the output differs: h = conv1(SiLU(norm1(x))); h = "
                           f"norm2(h) * (1 + gamma) + beta; h = conv2(dropout(SiLU(h))); "
                           f"return skip(x) + h"))
    return passed("your forward pass equals ResBlock's, with a group per channel, a change of "
                  "channels (1x1 skip) and batches of one to three")


class _UseTheParts(Exception):
    """Raised when the reader's forward pass calls the block's own forward."""


def _refuse_forward(*args, **kwargs):
    raise _UseTheParts("use the block's parts, not the block")


class _EmbeddingFunction(nn.Module):
    """A time embedding computed by the reader's function ``fn(t, dim, max_period)``."""

    def __init__(self, fn, dim: int, max_period: float):
        super().__init__()
        self.fn, self.dim, self.max_period = fn, dim, max_period

    def forward(self, t):
        return self.fn(t, self.dim, self.max_period)


def diffusion_unet_with(model, time_embedding=None, resblock_forward=None):
    """A copy of the :class:`~unet_edu.models.DiffusionUNet` ``model`` running your code.

    ``time_embedding(t, dim, max_period)`` replaces its :class:`SinusoidalTimeEmbedding`, and
    ``resblock_forward(block, x, emb)`` computes every :class:`ResBlock` (each keeps its own
    weights).  ``model`` itself is left unchanged; the copy has the same weights, so it must
    compute the same noise predictions when your code is right.
    """
    twin = copy.deepcopy(model)
    if time_embedding is not None:
        # DiffusionUNet builds its embedding with the default max_period, 10000.
        replace_modules(twin, SinusoidalTimeEmbedding,
                        lambda m: _EmbeddingFunction(time_embedding, m.dim, 10000.0))
    if resblock_forward is not None:
        replace_modules(twin, ResBlock, lambda m: ReaderModule(m, resblock_forward))
    return twin
