"""Checkers for chapter 5 (the diffusion U-Net), and a reference for self-attention.

:func:`reference_self_attention` recomputes what a :class:`~unet_edu.blocks.SelfAttention`
layer must output, position by position, from the layer's own weights: for each pixel ``i``,
softmax over all pixels ``j`` of ``q_i . k_j / sqrt(d)``, then the weighted mean of the
``v_j``.  :func:`attends_over_positions` compares any forward function with it; that is the
test which tells a correct attention layer from one that attends over channels.
"""

from __future__ import annotations

import math

import torch

from ..blocks import ResBlock, SelfAttention
from ..diffusion import ddim_timesteps
from . import verdict

__all__ = [
    "attention_weights",
    "reference_self_attention",
    "attends_over_positions",
    "check_resblock_params",
    "check_attention_entries",
    "check_ddim_timesteps",
    "check_attention_forward",
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
def reference_self_attention(layer: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    """What ``layer(x)`` must be, computed pixel by pixel (slow and plain, on purpose)."""
    b, c, h, w = x.shape
    q, k, v, d = _qkv_per_head(layer, x)
    out = torch.zeros_like(q)
    for i in range(h * w):  # one query pixel at a time
        scores = (q[:, :, i:i + 1, :] * k).sum(-1) / math.sqrt(d)  # (B, heads, HW): pixel i vs every pixel
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
