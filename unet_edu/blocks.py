"""The building blocks of both U-Nets, one small module each.

The 2015 U-Net is built from :class:`DoubleConv` (two 3x3 convolutions with ReLU), max pooling
and transposed convolutions.  The diffusion U-Net (Ho et al., 2020; Nichol & Dhariwal, 2021)
swaps these for :class:`ResBlock` (GroupNorm, SiLU, a residual path, and the timestep injected
by scale-shift), :class:`Downsample`/:class:`Upsample`, and attention at low resolution
(:class:`SelfAttention`, :class:`CrossAttention`).  :class:`AttentionGate` is the gate of the
Attention U-Net (Oktay et al., 2018).

Shapes follow PyTorch: images are ``(B, C, H, W)``, sequences ``(B, N, D)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .validation import check_groups

__all__ = [
    "DoubleConv",
    "SinusoidalTimeEmbedding",
    "ResBlock",
    "SelfAttention",
    "CrossAttention",
    "AttentionGate",
    "Downsample",
    "Upsample",
    "group_norm",
    "norm_factory",
    "zero_module",
]


def group_norm(channels: int, groups: int, where: str = "GroupNorm") -> nn.GroupNorm:
    """``nn.GroupNorm`` with a clear error when ``groups`` does not divide ``channels``."""
    if groups < 1:
        raise ValueError(f"{where}: norm_groups must be at least 1, got {groups}; 32 is usual")
    check_groups(channels, groups, where)
    return nn.GroupNorm(groups, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero, in place, and return it.

    A branch that ends in a zeroed layer and is *added* to a network starts as an exact no-op:
    the network computes what it computed before.  The zeroed layer's own weights still get
    gradients (its input is not zero), so after the first steps the branch switches itself on.
    DDPM's code zero-initialises the last convolution of each residual block and of the
    network; ControlNet joins a trainable copy of an encoder to a frozen model through zeroed
    1 x 1 convolutions, so training starts from the frozen model's exact behaviour.
    """
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


def norm_factory(norm, dims: int = 2, groups: int = 8, where: str = "norm"):
    """Turn ``norm`` (``None``, ``"batch"`` or ``"group"``) into a function ``channels -> layer``.

    The U-Nets take the normalisation as this factory, so one block serves 2-D and 3-D inputs
    and any norm: BatchNorm averages over the batch, GroupNorm (``groups`` groups of channels)
    does not, which is what small batches need.  ``None`` means no normalisation at all.
    """
    if norm is None:
        return None
    if norm == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    if norm == "group":
        return lambda channels: group_norm(channels, groups, f"{where} ({channels} channels)")
    raise ValueError(f"{where}: norm must be None, 'batch' or 'group', got {norm!r}")


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by ReLU: the unit of the 2015 U-Net.

    ``padding="valid"`` is the paper's choice (each convolution trims one pixel per side, so a
    block loses 4 pixels of height and width); ``"same"`` keeps the size.  ``norm`` adds a
    normalisation after each convolution, as most modern re-implementations do: ``"batch"``,
    or any factory ``channels -> layer`` from :func:`norm_factory`.  ``dims=3`` builds the same
    block for volumes (3x3x3 convolutions).
    """

    def __init__(self, in_channels: int, out_channels: int, padding: str = "same", norm=None,
                 dims: int = 2):
        pad = {"same": 1, "valid": 0}[padding]
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
        make_norm = norm_factory(norm, dims) if norm is None or isinstance(norm, str) else norm
        layers: list[nn.Module] = []
        for i, o in ((in_channels, out_channels), (out_channels, out_channels)):
            # A norm right after the convolution removes any constant: the bias would be wasted.
            layers.append(conv(i, o, 3, padding=pad, bias=make_norm is None))
            if make_norm is not None:
                layers.append(make_norm(o))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SinusoidalTimeEmbedding(nn.Module):
    """Map each timestep ``t`` to a ``dim``-vector of sines and cosines.

    Frequency ``k`` is ``w_k = max_period ** (-k / (dim/2))`` for ``k = 0 .. dim/2 - 1``: the
    first pair of channels turns once per radian of ``t`` (fine detail), the last turns once per
    ``~max_period`` steps (coarse position).  The output is ``[sin(t w_k) ..., cos(t w_k) ...]``,
    bounded in [-1, 1], smooth in ``t``, and with a dot product between two embeddings that
    depends only on the distance between their timesteps — the properties chapter 4 measures.
    """

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"SinusoidalTimeEmbedding needs an even dim, got {dim}; use {dim + 1}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.float()[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    """Residual block of the diffusion U-Net, conditioned on an embedding (time, class).

    ``h = conv1(SiLU(GN(x)))``; the embedding ``e`` gives a per-channel scale ``gamma`` and
    shift ``beta``; ``h = conv2(dropout(SiLU(GN(h) * (1 + gamma) + beta)))``; output ``x' + h``
    where ``x'`` is ``x`` itself or a 1x1 convolution when the channel count changes.

    ``time_mode="add"`` replaces scale-shift by plain addition at the same place,
    ``h = GN(h) + beta``, so that the two differ only in the gain.  (DDPM's own block adds the
    embedding earlier, before the second GroupNorm, and zero-initialises ``conv2``.)  ``emb_dim=None`` builds a block without
    conditioning (the ablation of chapter 4).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int | None = None,
        dropout: float = 0.0,
        norm_groups: int = 32,
        time_mode: str = "scale_shift",
    ):
        super().__init__()
        if time_mode not in ("scale_shift", "add"):
            raise ValueError(f"time_mode must be 'scale_shift' or 'add', got {time_mode!r}")
        self.time_mode = time_mode
        where = f"ResBlock({in_channels}->{out_channels})"
        self.norm1 = group_norm(in_channels, norm_groups, where)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, norm_groups, where)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if emb_dim is None:
            self.emb_proj = None
        else:
            n = 2 * out_channels if time_mode == "scale_shift" else out_channels
            self.emb_proj = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, n))
        same = in_channels == out_channels
        self.skip = nn.Identity() if same else nn.Conv2d(in_channels, out_channels, 1)

    def scale_shift(self, emb: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The per-channel ``(gamma, beta)`` this block derives from ``emb`` (no gamma: "add")."""
        p = self.emb_proj(emb)[:, :, None, None]
        if self.time_mode == "scale_shift":
            gamma, beta = p.chunk(2, dim=1)
            return gamma, beta
        return None, p

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.emb_proj is not None:
            if emb is None:
                raise ValueError("this ResBlock is conditioned: pass the embedding emb")
            gamma, beta = self.scale_shift(emb)
            h = h * (1 + gamma) + beta if gamma is not None else h + beta
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C/heads): attention runs over the N positions."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` by :func:`~torch.nn.functional.scaled_dot_product_attention`.

    On the CPU it always runs in float32, also under bf16 autocast: there the fused CPU kernel
    is slower in bf16 than in float32 (1.2-2x for the book's shapes, forward and backward; see
    the appendix "How fast is it?"), and a float32 softmax is the more accurate one anyway.
    On a GPU the bf16 kernel is the fast one, so the dtype is left to autocast.
    """
    if q.device.type == "cpu" and q.dtype != torch.float32:
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v)


def _check_heads(channels: int, heads: int, where: str) -> None:
    if heads < 1 or channels % heads:
        options = [h for h in range(1, channels + 1) if channels % h == 0 and h <= 16]
        raise ValueError(
            f"{where}: {channels} channels cannot be split into {heads} heads; use num_heads in "
            f"{options}"
        )


class SelfAttention(nn.Module):
    """Multi-head self-attention over the ``H*W`` spatial positions, with a residual.

    Each pixel is a token with ``C`` features; every pixel attends to every other pixel, which
    gives the network a global view in one layer at a cost of ``(H*W)^2`` — the reason diffusion
    U-Nets use attention only at low resolution.  The tokens are laid out as ``(B, heads, H*W,
    C/heads)`` before :func:`torch.nn.functional.scaled_dot_product_attention`, so the softmax
    runs over positions, not channels (chapter 5 shows the bug where it does not).
    """

    def __init__(self, channels: int, num_heads: int = 4, norm_groups: int = 32):
        super().__init__()
        _check_heads(channels, num_heads, "SelfAttention")
        self.num_heads = num_heads
        self.norm = group_norm(channels, norm_groups, f"SelfAttention({channels})")
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, H*W, C)
        q, k, v = (_split_heads(z, self.num_heads) for z in self.qkv(tokens).chunk(3, dim=-1))
        out = _attend(q, k, v)  # (B, heads, H*W, C/heads)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return x + out.transpose(1, 2).view(b, c, h, w)


class CrossAttention(nn.Module):
    """Pixels (queries) attend to a context sequence (keys, values), with a residual.

    This is how latent diffusion (Rombach et al., 2022) conditions on text: ``context`` is a
    ``(B, N, context_dim)`` sequence, e.g. token embeddings; each pixel takes a weighted average
    of the context vectors that are relevant to it.
    """

    def __init__(self, channels: int, context_dim: int, num_heads: int = 4, norm_groups: int = 32):
        super().__init__()
        _check_heads(channels, num_heads, "CrossAttention")
        self.num_heads = num_heads
        self.context_dim = context_dim
        self.norm = group_norm(channels, norm_groups, f"CrossAttention({channels})")
        self.to_q = nn.Linear(channels, channels)
        self.to_kv = nn.Linear(context_dim, 2 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if context.dim() != 3 or context.shape[0] != b or context.shape[2] != self.context_dim:
            raise ValueError(
                f"CrossAttention: context must have shape ({b}, N, {self.context_dim}), got "
                f"{tuple(context.shape)}"
            )
        q = _split_heads(self.to_q(self.norm(x).flatten(2).transpose(1, 2)), self.num_heads)
        k, v = (_split_heads(z, self.num_heads) for z in self.to_kv(context).chunk(2, dim=-1))
        out = _attend(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return x + out.transpose(1, 2).view(b, c, h, w)


class AttentionGate(nn.Module):
    """Additive attention gate on a skip connection (Attention U-Net, Oktay et al., 2018).

    The decoder's coarser signal ``g`` decides, pixel by pixel, how much of the encoder's skip
    ``x`` to let through: ``alpha = sigmoid(psi(ReLU(W_x x + W_g g)))`` and the output is
    ``alpha * x``.  ``g`` is resized to ``x``'s grid first.  The last gate map is kept in
    ``self.last_alpha`` so it can be drawn.
    """

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int | None = None):
        super().__init__()
        inter = inter_channels or max(1, skip_channels // 2)
        self.w_x = nn.Conv2d(skip_channels, inter, 1, bias=False)
        self.w_g = nn.Conv2d(gate_channels, inter, 1)
        self.psi = nn.Conv2d(inter, 1, 1)
        self.last_alpha: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if g.shape[-2:] != x.shape[-2:]:
            g = F.interpolate(g, size=x.shape[-2:], mode="bilinear", align_corners=False)
        alpha = torch.sigmoid(self.psi(F.relu(self.w_x(x) + self.w_g(g))))
        self.last_alpha = alpha.detach()
        return x * alpha


class Downsample(nn.Module):
    """Halve height and width with a learned 3x3 convolution of stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double height and width: nearest-neighbour upsampling, then a 3x3 convolution.

    Nearest + conv avoids the checkerboard artefacts of transposed convolutions (Odena et al.,
    2016) while keeping the layer learnable.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
