"""The building blocks of both U-Nets, one small module each.

The 2015 U-Net is built from :class:`DoubleConv` (two 3x3 convolutions with ReLU), max pooling
and transposed convolutions.  The diffusion U-Net (Ho et al., 2020; Nichol & Dhariwal, 2021)
swaps these for :class:`ResBlock` (GroupNorm, SiLU, a residual path, and the timestep injected
by scale-shift), :class:`Downsample`/:class:`Upsample`, and attention at low resolution
(:class:`SelfAttention`, :class:`CrossAttention`).  :class:`AttentionGate` is the gate of the
Attention U-Net (Oktay et al., 2018).

Stable Diffusion (Rombach et al., 2022) replaces the attention layers by a
:class:`SpatialTransformer`, a stack of :class:`TransformerBlock`: :class:`MultiHeadAttention`
(self, then cross to the text) and a :class:`GEGLU` :class:`FeedForward` layer.
:class:`AdaLNZeroBlock` is the block of the Diffusion Transformer (Peebles & Xie, 2023), which
conditions by scale-shift.

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
    "MultiHeadAttention",
    "GEGLU",
    "FeedForward",
    "TransformerBlock",
    "SpatialTransformer",
    "AdaLNZeroBlock",
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
    """Two 3x3 convolutions, each followed by ReLU: the unit of the 2015
    U-Net.

    ``padding="valid"`` is the paper's choice (each convolution trims one
    pixel per side, so a block loses 4 pixels of height and width);
    ``"same"`` keeps the size.  ``norm`` adds a normalisation after each
    convolution, as most modern re-implementations do: ``"batch"``, or any
    factory ``channels -> layer`` from :func:`norm_factory`.  ``dims=3``
    builds the same block for volumes (3x3x3 convolutions).
    """

    def __init__(self, in_channels: int, out_channels: int,
                 padding: str = "same", norm=None,
                 dims: int = 2):
        pad = {"same": 1, "valid": 0}[padding]
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
        make_norm = (norm_factory(norm, dims)
                     if norm is None or isinstance(norm, str) else norm)
        layers: list[nn.Module] = []
        for i, o in ((in_channels, out_channels),
                     (out_channels, out_channels)):
            # A norm right after the convolution removes any constant: the
            # bias would be wasted.
            layers.append(conv(i, o, 3, padding=pad,
                               bias=make_norm is None))
            if make_norm is not None:
                layers.append(make_norm(o))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SinusoidalTimeEmbedding(nn.Module):
    """Map each timestep ``t`` to a ``dim``-vector of sines and cosines.

    Frequency ``k`` is ``w_k = max_period ** (-k / h)`` radians per step,
    ``h = dim/2``, for ``k = 0 .. h - 1``: the first pair of channels turns
    once every ``2 pi`` (about 6.3) steps (fine detail), the last once every
    ``2 pi * max_period ** ((h - 1) / h)`` steps (coarse position; about
    6,300 steps for ``dim=8``, 54,000 for ``dim=128``, always less than
    ``2 pi * max_period``).  The output is
    ``[sin(t w_k) ..., cos(t w_k) ...]``, bounded in [-1, 1], smooth in
    ``t``, and with a dot product between two embeddings that depends only
    on the distance between their timesteps — the properties chapter 4
    measures.
    """

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"SinusoidalTimeEmbedding needs an even dim, "
                             f"got {dim}; use {dim + 1}")
        half = dim // 2
        k = torch.arange(half, dtype=torch.float32)
        freqs = torch.exp(-math.log(max_period) * k / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.float()[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    """Residual block of the diffusion U-Net, conditioned on an embedding
    (time, class).

    ``h = conv1(SiLU(GN(x)))``; the embedding ``e`` gives a per-channel
    scale ``gamma`` and shift ``beta``;
    ``h = conv2(dropout(SiLU(GN(h) * (1 + gamma) + beta)))``; output
    ``x' + h`` where ``x'`` is ``x`` itself or a 1x1 convolution when the
    channel count changes.

    ``time_mode="add"`` replaces scale-shift by plain addition at the same
    place, ``h = GN(h) + beta``, so that the two differ only in the gain.
    (DDPM's own block adds the embedding earlier, before the second
    GroupNorm, and zero-initialises ``conv2``.)  ``emb_dim=None`` builds a
    block without conditioning (the ablation of chapter 4).
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
            raise ValueError(
                f"time_mode must be 'scale_shift' or 'add', "
                f"got {time_mode!r}")
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
            n = (2 * out_channels if time_mode == "scale_shift"
                 else out_channels)
            self.emb_proj = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, n))
        same = in_channels == out_channels
        self.skip = (nn.Identity() if same
                     else nn.Conv2d(in_channels, out_channels, 1))

    def scale_shift(self, emb: torch.Tensor
                    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The per-channel ``(gamma, beta)`` this block derives from ``emb``
        (no gamma: "add")."""
        p = self.emb_proj(emb)[:, :, None, None]
        if self.time_mode == "scale_shift":
            gamma, beta = p.chunk(2, dim=1)
            return gamma, beta
        return None, p

    def forward(self, x: torch.Tensor,
                emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.emb_proj is not None:
            if emb is None:
                raise ValueError("this ResBlock is conditioned: "
                                 "pass the embedding emb")
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
    """Multi-head self-attention over the ``H*W`` spatial positions, with a
    residual.

    Each pixel is a token with ``C`` features; every pixel attends to every
    other pixel, which gives the network a global view in one layer at a
    cost of ``(H*W)^2`` — the reason diffusion U-Nets use attention only at
    low resolution.  The tokens are laid out as
    ``(B, heads, H*W, C/heads)`` before
    :func:`torch.nn.functional.scaled_dot_product_attention`, so the
    softmax runs over positions, not channels (chapter 5 shows the bug
    where it does not).
    """

    def __init__(self, channels: int, num_heads: int = 4,
                 norm_groups: int = 32):
        super().__init__()
        _check_heads(channels, num_heads, "SelfAttention")
        self.num_heads = num_heads
        self.norm = group_norm(channels, norm_groups,
                               f"SelfAttention({channels})")
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, H*W, C)
        q, k, v = (_split_heads(z, self.num_heads)
                   for z in self.qkv(tokens).chunk(3, dim=-1))
        out = _attend(q, k, v)  # (B, heads, H*W, C/heads)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return x + out.transpose(1, 2).view(b, c, h, w)


class CrossAttention(nn.Module):
    """Pixels (queries) attend to a context sequence (keys, values), with a
    residual.

    This is how latent diffusion (Rombach et al., 2022) conditions on text:
    ``context`` is a ``(B, N, context_dim)`` sequence, e.g. token
    embeddings; each pixel takes a weighted average of the context vectors
    that are relevant to it.
    """

    def __init__(self, channels: int, context_dim: int, num_heads: int = 4,
                 norm_groups: int = 32):
        super().__init__()
        _check_heads(channels, num_heads, "CrossAttention")
        self.num_heads = num_heads
        self.context_dim = context_dim
        self.norm = group_norm(channels, norm_groups,
                               f"CrossAttention({channels})")
        self.to_q = nn.Linear(channels, channels)
        self.to_kv = nn.Linear(context_dim, 2 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor,
                context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if (context.dim() != 3 or context.shape[0] != b
                or context.shape[2] != self.context_dim):
            raise ValueError(
                f"CrossAttention: context must have shape "
                f"({b}, N, {self.context_dim}), got "
                f"{tuple(context.shape)}"
            )
        q = _split_heads(self.to_q(self.norm(x).flatten(2).transpose(1, 2)),
                         self.num_heads)
        k, v = (_split_heads(z, self.num_heads)
                for z in self.to_kv(context).chunk(2, dim=-1))
        out = _attend(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return x + out.transpose(1, 2).view(b, c, h, w)


class AttentionGate(nn.Module):
    """Additive attention gate on a skip connection (Attention U-Net,
    Oktay et al., 2018).

    The decoder's coarser signal ``g`` decides, pixel by pixel, how much of
    the encoder's skip ``x`` to let through:
    ``alpha = sigmoid(psi(ReLU(W_x x + W_g g)))`` and the output is
    ``alpha * x``.  ``g`` is resized to ``x``'s grid first.  The last gate
    map is kept in ``self.last_alpha`` so it can be drawn.
    """

    def __init__(self, skip_channels: int, gate_channels: int,
                 inter_channels: int | None = None):
        super().__init__()
        inter = inter_channels or max(1, skip_channels // 2)
        self.w_x = nn.Conv2d(skip_channels, inter, 1, bias=False)
        self.w_g = nn.Conv2d(gate_channels, inter, 1)
        self.psi = nn.Conv2d(inter, 1, 1)
        self.last_alpha: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if g.shape[-2:] != x.shape[-2:]:
            g = F.interpolate(g, size=x.shape[-2:], mode="bilinear",
                              align_corners=False)
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
    """Double height and width: nearest-neighbour upsampling, then a 3x3
    convolution.

    Nearest + conv avoids the checkerboard artefacts of transposed
    convolutions (Odena et al., 2016) while keeping the layer learnable.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# --------------------------------------------------------------------------------------------
# Transformer blocks: Stable Diffusion's attention layers, and DiT's adaLN-Zero block
# --------------------------------------------------------------------------------------------
class MultiHeadAttention(nn.Module):
    """Multi-head attention between token sequences, as in Stable Diffusion's transformer blocks.

    Queries come from ``x`` ``(B, N, dim)``; keys and values come from ``context`` ``(B, M,
    context_dim)`` (cross-attention) or, without a context, from ``x`` itself
    (self-attention).  ``to_q``, ``to_k`` and ``to_v`` are linear maps without bias and
    ``to_out`` has one, as in the latent diffusion code (Rombach et al., 2022), so that the
    parameter counts match the published models.  The ``dim`` channels are split into
    ``num_heads`` heads of ``dim / num_heads`` channels; each head computes
    ``softmax(q k^T / sqrt(d)) v`` (Vaswani et al., 2017, eq. 1).

    ``mask`` ``(B, M)``, True where a key may be attended to, hides padding tokens.
    The weights themselves are not kept by the fused kernel; set ``keep_weights = True`` and
    the next forward pass computes them explicitly and keeps them, ``(B, heads, N, M)``, in
    ``last_weights``: row ``i`` says how much query ``i`` (a pixel) reads from each key (a
    word).  That is how the cross-attention maps of chapter 7 are drawn.
    """

    def __init__(self, dim: int, context_dim: int | None = None, num_heads: int = 8):
        super().__init__()
        _check_heads(dim, num_heads, "MultiHeadAttention")
        self.num_heads = num_heads
        self.context_dim = dim if context_dim is None else context_dim
        self.is_cross = context_dim is not None
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(self.context_dim, dim, bias=False)
        self.to_v = nn.Linear(self.context_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.keep_weights = False
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        if self.is_cross and context is None:
            raise ValueError(f"MultiHeadAttention is a cross-attention to a ({b}, M, "
                             f"{self.context_dim}) context; pass context=")
        source = x if context is None else context
        if source.dim() != 3 or source.shape[0] != b or source.shape[2] != self.context_dim:
            raise ValueError(f"MultiHeadAttention: context must have shape ({b}, M, "
                             f"{self.context_dim}), got {tuple(source.shape)}")
        q = _split_heads(self.to_q(x), self.num_heads)
        k = _split_heads(self.to_k(source), self.num_heads)
        v = _split_heads(self.to_v(source), self.num_heads)
        keep = None if mask is None else mask[:, None, None, :].to(torch.bool)  # (B, 1, 1, M)
        if self.keep_weights:
            scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
            if keep is not None:
                scores = scores.masked_fill(~keep, float("-inf"))
            weights = scores.softmax(dim=-1)
            self.last_weights = weights.detach()
            out = (weights @ v.float()).to(v.dtype)
        elif keep is not None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        else:
            out = _attend(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, c))


class GEGLU(nn.Module):
    """A gated linear unit with a GELU gate: ``h * GELU(g)`` where ``[h, g] = W x + b``.

    Shazeer (2020) found the gated variants of the transformer's feed-forward layer better
    than a plain ``GELU(W x)``; Stable Diffusion's transformer blocks use this one.  The
    projection produces ``2 * hidden`` values, half of them gates.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Sequential):
    """The transformer's position-wise MLP: GEGLU to ``mult * dim`` channels, back to ``dim``."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__(GEGLU(dim, mult * dim), nn.Dropout(dropout), nn.Linear(mult * dim, dim))


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention and a feed-forward layer, each
    pre-normed and residual.

    ``x = x + attn1(LN(x))``; ``x = x + attn2(LN(x), context)``; ``x = x +
    ff(LN(x))``: the ``BasicTransformerBlock`` of Stable Diffusion.
    Self-attention lets the pixels of a map exchange information;
    cross-attention lets each pixel read the text; the feed-forward layer
    (GEGLU, 4x wider) transforms each position on its own.  Without
    ``context_dim`` there is no cross-attention (a plain pre-norm
    transformer layer, e.g. for a text encoder); ``mask`` ``(B, N)`` hides
    padding tokens from the self-attention.
    """

    def __init__(self, dim: int, num_heads: int = 8,
                 context_dim: int | None = None, ff_mult: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = MultiHeadAttention(dim, None, num_heads)
        if context_dim is not None:
            self.norm2 = nn.LayerNorm(dim)
            self.attn2 = MultiHeadAttention(dim, context_dim, num_heads)
        else:
            self.norm2, self.attn2 = None, None
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_mult, dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x), mask=mask)
        if self.attn2 is not None:
            x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Stable Diffusion's attention layer for feature maps: ``depth`` transformer blocks.

    ``GroupNorm -> proj_in -> TransformerBlock x depth -> proj_out``, added to the input.
    The map's ``H*W`` pixels become a sequence of tokens with ``channels`` features;
    ``proj_in``/``proj_out`` are 1x1 convolutions (SD 1.x) or, with ``linear_projection``,
    linear maps on the tokens (SD 2.x and SDXL): the same numbers of parameters, applied
    before or after flattening.  ``proj_out`` starts at zero (:func:`zero_module`), as in the
    latent diffusion code, so a new layer starts as the identity.  ``context`` ``(B, M,
    context_dim)`` is what every block cross-attends to (the encoded caption).
    """

    def __init__(self, channels: int, num_heads: int = 8, context_dim: int | None = None,
                 depth: int = 1, norm_groups: int = 32, linear_projection: bool = False):
        super().__init__()
        if depth < 1:
            raise ValueError(f"SpatialTransformer: depth must be at least 1, got {depth}; "
                             f"leave the level out of attention_levels for no attention")
        _check_heads(channels, num_heads, f"SpatialTransformer({channels})")
        check_groups(channels, norm_groups, f"SpatialTransformer({channels})")
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.linear_projection = bool(linear_projection)
        if self.linear_projection:
            self.proj_in = nn.Linear(channels, channels)
            self.proj_out = zero_module(nn.Linear(channels, channels))
        else:
            self.proj_in = nn.Conv2d(channels, channels, 1)
            self.proj_out = zero_module(nn.Conv2d(channels, channels, 1))
        self.blocks = nn.ModuleList(TransformerBlock(channels, num_heads, context_dim)
                                    for _ in range(depth))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x)
        if not self.linear_projection:
            tokens = self.proj_in(tokens)
        tokens = tokens.flatten(2).transpose(1, 2)  # (B, H*W, C)
        if self.linear_projection:
            tokens = self.proj_in(tokens)
        for block in self.blocks:
            tokens = block(tokens, context)
        if self.linear_projection:
            tokens = self.proj_out(tokens)
        tokens = tokens.transpose(1, 2).reshape(b, c, h, w)
        if not self.linear_projection:
            tokens = self.proj_out(tokens)
        return x + tokens


class AdaLNZeroBlock(nn.Module):
    """The DiT block (Peebles & Xie, 2023): a transformer layer conditioned by adaLN-Zero.

    The conditioning vector ``c`` (timestep and class embeddings) is mapped to six vectors per
    token channel: ``shift, scale, gate`` for the attention and for the MLP.  Each sub-layer
    sees ``LN(x) * (1 + scale) + shift`` — chapter 4's scale-shift, applied to a LayerNorm
    without learned parameters — and its output is multiplied by ``gate`` before it is added
    to ``x``.  The map to the six vectors starts at zero ("Zero"), so every gate is 0 and the
    whole block is exactly the identity at initialisation; DiT found that this start trains
    better than conditioning by cross-attention or by adaLN without the zero gates.
    ``x`` is ``(B, N, dim)``, ``c`` is ``(B, cond_dim)``.
    """

    def __init__(self, dim: int, cond_dim: int, num_heads: int = 8, mlp_ratio: int = 4):
        super().__init__()
        _check_heads(dim, num_heads, "AdaLNZeroBlock")
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = MultiHeadAttention(dim, None, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * dim, dim))
        self.modulation = nn.Sequential(nn.SiLU(), zero_module(nn.Linear(cond_dim, 6 * dim)))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if c.dim() != 2 or c.shape[0] != x.shape[0]:
            raise ValueError(f"AdaLNZeroBlock: c must be one conditioning vector per sequence, "
                             f"shape ({x.shape[0]}, cond_dim), got {tuple(c.shape)}")
        mods = self.modulation(c)[:, None, :].chunk(6, dim=-1)
        shift1, scale1, gate1, shift2, scale2, gate2 = mods
        x = x + gate1 * self.attn(self.norm1(x) * (1 + scale1) + shift1)
        return x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)
