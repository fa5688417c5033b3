"""Chapter 7 — Stable Diffusion's U-Net: text enters through cross-attention.  Checkers.

The build-it exercise runs code you write against the package's own layer and returns one
line of :class:`~unet_edu.exercises.feedback.Feedback`:

* :func:`check_cross_attention` -- the forward pass of
  :class:`~unet_edu.blocks.CrossAttention`: queries from the image's pixels, keys and values
  from the text's tokens, several heads, and the residual.

:func:`with_cross_attention` puts your function into every cross-attention layer of a
:class:`~unet_edu.models.DiffusionUNet` built with ``context_dim``.

``torch.nn.functional.scaled_dot_product_attention`` may be used: the exercise is about
which tensor supplies the queries and which the keys and values, how the channels are split
into heads, and the shapes around the attention.  Writing the softmax by hand once, as
``softmax(q k^T / sqrt(d)) v``, shows what that function computes; the checker recognises the
usual slips of the hand-written version too (softmax over the wrong axis, a missing or wrong
scale).
"""

from __future__ import annotations

import copy
import functools
import math

import torch

from .feedback import (Verdict, checker, close, hint, passed, require_callable,
                       require_signature, require_tensor, run)
from ..blocks import CrossAttention

__all__ = ["cross_attention_variant", "check_cross_attention", "with_cross_attention"]

_CROSS = "my_cross_attention"


def cross_attention_variant(layer: CrossAttention, x: torch.Tensor, context: torch.Tensor,
                            change: str = "") -> torch.Tensor:
    """The cross-attention forward pass written out, with one optional deliberate change.

    ``change=""`` equals ``layer(x, context)``.  The changes are the mistakes the checker
    recognises: ``"softmax-pixels"`` (softmax over the queries), ``"no-scale"``,
    ``"scale-C"`` (divide by sqrt(C), not sqrt(C / heads)), ``"kv-swap"``, ``"one-head"``,
    ``"bad-split"`` (channels split as (head_dim, heads)), ``"no-norm"``,
    ``"no-residual"``.
    """
    b, c, h, w = x.shape
    heads = 1 if change == "one-head" else layer.num_heads
    d = c // heads
    pixels = x if change == "no-norm" else layer.norm(x)
    q = layer.to_q(pixels.flatten(2).transpose(1, 2))          # (B, HW, C)
    k, v = layer.to_kv(context).chunk(2, dim=-1)               # (B, N, C) each
    if change == "kv-swap":
        k, v = v, k

    def split(z):
        if change == "bad-split":
            return z.reshape(z.shape[0], z.shape[1], d, heads).permute(0, 3, 1, 2)
        return z.reshape(z.shape[0], z.shape[1], heads, d).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)                     # (B, heads, tokens, d)
    scores = q @ k.transpose(-1, -2)                           # (B, heads, HW, N)
    if change == "scale-C":
        scores = scores / math.sqrt(c)
    elif change != "no-scale":
        scores = scores / math.sqrt(d)
    weights = scores.softmax(dim=-2 if change == "softmax-pixels" else -1)
    out = weights @ v                                          # (B, heads, HW, d)
    if change == "bad-split":
        out = out.permute(0, 2, 3, 1).reshape(b, h * w, c)
    else:
        out = out.transpose(1, 2).reshape(b, h * w, c)
    out = layer.proj(out).transpose(1, 2).reshape(b, c, h, w)
    return out if change == "no-residual" else x + out


_MISTAKES = (
    ("softmax-pixels", "the softmax runs over the wrong axis: each pixel's weights over the "
                       "text tokens must sum to 1, softmax(scores, dim=-1) on scores of shape "
                       "(B, heads, H*W, N)"),
    ("no-scale", "divide the scores by sqrt(d), d = C / heads, before the softmax: without it "
                 "the softmax saturates as the head dimension grows"),
    ("scale-C", "divide the scores by sqrt(d) with d the head's dimension, C / heads, not by "
                "sqrt(C)"),
    ("kv-swap", "keys and values are swapped: the first half of layer.to_kv(context) holds the "
                "keys, the second the values"),
    ("one-head", "split the channels into layer.num_heads heads: each head attends on its own "
                 "C / heads channels"),
    ("bad-split", "split the channels as (heads, head_dim): z.view(B, N, heads, C // heads)"
                  ".transpose(1, 2), and merge them back in the same order"),
    ("no-norm", "the image is normalised before the queries are made: "
                "layer.to_q(layer.norm(x) ...)"),
    ("no-residual", "add the input back: the layer returns x + proj(attention)"),
)


@checker
def check_cross_attention(my_cross_attention):
    """Does ``my_cross_attention(layer, x, context)`` compute ``layer(x, context)``?

    ``layer`` is a :class:`~unet_edu.blocks.CrossAttention`; use its parts ``norm``,
    ``to_q``, ``to_kv``, ``proj`` and ``num_heads``.  The queries come from the normalised
    image, one token per pixel, ``(B, H*W, C)``; keys and values from the text, ``context``
    of shape ``(B, N, context_dim)``, through ``to_kv``; split the ``C`` channels into heads,
    attend (each pixel's weights over the ``N`` tokens sum to 1), merge the heads, project,
    reshape to ``(B, C, H, W)`` and add ``x``.  Four cases: several tokens and heads, a
    single token, a batch of one with a non-square image, and one head.  The layer's own
    forward refuses to run inside the check.
    """
    params = "(layer, x, context)"
    require_callable(my_cross_attention, _CROSS, params)
    torch.manual_seed(16)
    layers = {4: CrossAttention(16, context_dim=12, num_heads=4, norm_groups=4).eval(),
              1: CrossAttention(8, context_dim=5, num_heads=1, norm_groups=2).eval()}
    require_signature(my_cross_attention, _CROSS,
                      (layers[4], torch.zeros(1, 16, 2, 2), torch.zeros(1, 3, 12)), params)
    gen = torch.Generator().manual_seed(17)
    cases = [("7 tokens, 4 heads", 4, (2, 16, 5, 6), 7),
             ("a single token", 4, (2, 16, 4, 4), 1),
             ("a batch of one, 3 x 7 pixels", 4, (1, 16, 3, 7), 5),
             ("one head", 1, (2, 8, 4, 5), 6)]
    for label, key, shape, n in cases:
        layer = layers[key]
        x = torch.randn(shape, generator=gen)
        context = 2 * torch.randn(shape[0], n, layer.context_dim, generator=gen)
        twin = copy.deepcopy(layer)
        twin.forward = _refuse
        with torch.no_grad():
            ran = run(my_cross_attention, twin, x.clone(), context.clone(), what=_CROSS)
            if not ran.ok:
                if isinstance(ran.error, _UseTheParts):
                    raise Verdict(hint("compute the attention from the layer's parts (norm, "
                                       "to_q, to_kv, proj) instead of calling layer(x, "
                                       "context)"))
                if "shapes cannot be multiplied" in ran.message:
                    raise Verdict(hint("the queries come from the image, layer.to_q on the "
                                       "normalised pixels (B, H*W, C); keys and values from "
                                       "the text, layer.to_kv(context)"))
                if "num_groups" in ran.message or "divisible by" in ran.message:
                    raise Verdict(hint("normalise the image, layer.norm(x) on (B, C, H, W), "
                                       "not the text tokens"))
                raise Verdict(ran.failure(_CROSS, f"it failed with {label}"))
            y = ran.value
            if isinstance(y, torch.Tensor) and tuple(y.shape) == (shape[0], shape[2] * shape[3],
                                                                 shape[1]):
                raise Verdict(hint("turn the pixel tokens back into an image: (B, H*W, C) -> "
                                   "(B, C, H, W) with .transpose(1, 2).reshape(B, C, H, W), "
                                   "then add x"))
            y = require_tensor(y, _CROSS, shape, "the layer returns an image of x's shape")
            want = layer(x, context)
            if close(y, want):
                continue
            for change, text in _MISTAKES:
                if close(y, cross_attention_variant(layer, x, context, change)):
                    raise Verdict(hint(text))
        raise Verdict(hint(f"with {label} your output differs: q from layer.to_q(norm(x) as "
                           f"tokens), k and v from layer.to_kv(context), heads of C / heads "
                           f"channels, softmax(q k^T / sqrt(d)) v, proj, reshape, + x"))
    return passed("your cross-attention equals CrossAttention with several heads and one, "
                  "many tokens and a single one, and a non-square image in a batch of one")


class _UseTheParts(Exception):
    """Raised when the reader's function calls the layer's own forward."""


def _refuse(*args, **kwargs):
    raise _UseTheParts("use the layer's parts, not the layer")


def with_cross_attention(model, cross_attention):
    """A copy of ``model`` whose cross-attention layers compute ``cross_attention(layer, x,
    context)``; each layer keeps its weights, and ``model`` itself is left unchanged.

    The layers stay :class:`~unet_edu.blocks.CrossAttention` objects (the U-Net hands the
    context only to layers of that type); only their ``forward`` is replaced by yours.
    """
    twin = copy.deepcopy(model)
    layers = [m for m in twin.modules() if isinstance(m, CrossAttention)]
    if not layers:
        raise ValueError(f"with_cross_attention: {type(model).__name__} has no "
                         f"CrossAttention layer; build the DiffusionUNet with context_dim=...")
    for layer in layers:
        layer.forward = functools.partial(cross_attention, layer)
    return twin
