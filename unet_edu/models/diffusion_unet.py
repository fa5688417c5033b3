"""The noise predictor of a diffusion model: a U-Net of ResBlocks, attention and time embedding.

The layout follows DDPM (Ho et al., 2020) and its refinements (Nichol & Dhariwal, 2021):

* ``conv_in`` lifts the image to ``base_channels``;
* each encoder level has ``num_res_blocks`` ResBlocks (plus attention at the chosen levels)
  and, except the lowest, a strided-convolution :class:`~unet_edu.blocks.Downsample`;
* the middle is ResBlock, SelfAttention, ResBlock at the lowest resolution;
* each decoder level has ``num_res_blocks + 1`` ResBlocks, each fed one stored encoder map by
  concatenation (every encoder output — after ``conv_in``, each ResBlock and each Downsample —
  is kept once and used once), and, except the top, an :class:`~unet_edu.blocks.Upsample`;
* ``GroupNorm -> SiLU -> conv_out`` maps back to the image channels.

The timestep goes through :class:`~unet_edu.blocks.SinusoidalTimeEmbedding` and a two-layer MLP
to a vector of ``4 * base_channels`` that every ResBlock turns into its own scale and shift.
A class label adds a learned embedding to that vector; label ``num_classes`` is the *null*
class used for classifier-free guidance.

With ``transformer_depth`` the attention levels get Stable Diffusion's
:class:`~unet_edu.blocks.SpatialTransformer` instead (self-attention, cross-attention to the
text, a feed-forward layer); with ``label_dim`` the label is a vector (SDXL's pooled text and
image-size conditioning) embedded by a small MLP.  Stable Diffusion's U-Nets are then
configurations of this class (:mod:`unet_edu.models.stable_diffusion`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import (
    CrossAttention,
    Downsample,
    ResBlock,
    SelfAttention,
    SinusoidalTimeEmbedding,
    SpatialTransformer,
    Upsample,
    group_norm,
)
from .checks import check_batch, check_halvings
from .config import RecordsConfig

__all__ = ["DiffusionUNet"]


class DiffusionUNet(RecordsConfig, nn.Module):
    """``eps_theta(x_t, t, y, context)``: predict the noise in ``x_t``.

    Parameters
    ----------
    base_channels, channel_mult:
        Level ``i`` has ``base_channels * channel_mult[i]`` channels; there are
        ``len(channel_mult)`` levels, so height and width must be divisible by
        ``2 ** (len(channel_mult) - 1)``.
    num_res_blocks:
        ResBlocks per encoder level (the decoder has one more per level).
    attention_levels:
        Indices of the levels that get SelfAttention after each ResBlock (default: the lowest
        level only).  The middle block always has attention.
    num_classes:
        Build a class-conditional model; ``y`` takes values ``0 .. num_classes`` where
        ``num_classes`` means "no label" (classifier-free guidance).
    context_dim:
        Add CrossAttention to a ``(B, N, context_dim)`` sequence at the attention levels.
    time_conditioning:
        ``False`` builds the ablation that never sees ``t``.
    time_mode:
        ``"scale_shift"`` (h * (1 + gamma) + beta) or ``"add"`` (h + beta).
    skip:
        ``"concat"`` or ``"none"`` (the decoder gets no encoder maps: the ablation).
    num_timesteps:
        The number of diffusion steps the model is trained for (``t`` in ``[0,
        num_timesteps)``); the samplers and the loss check ``t`` against it.
    transformer_depth:
        ``None`` (the default) gives the attention levels and the middle chapter 5's
        SelfAttention (and CrossAttention).  A number, or one number per level, gives them a
        :class:`~unet_edu.blocks.SpatialTransformer` of that many transformer blocks instead,
        as Stable Diffusion does; the middle gets the lowest level's number (SDXL: 10).
    linear_projection:
        With ``transformer_depth``: ``True`` makes the transformers' ``proj_in``/``proj_out``
        linear maps (SD 2.x, SDXL) instead of 1x1 convolutions (SD 1.x, the default).
    head_channels:
        Channels per attention head; each level then has ``channels / head_channels`` heads
        (SDXL: 64).  ``None`` gives every level ``num_heads`` heads (SD 1.5: 8).
    label_dim:
        ``y`` is a ``(B, label_dim)`` vector instead of a class id, embedded by a two-layer
        MLP and added to the time embedding (SDXL: the pooled text embedding and the image's
        size and crop, 2,816 numbers).  Not together with ``num_classes``.

    ``forward`` checks shapes and dtypes only; the values of ``t`` and ``y`` are checked where
    they enter the package (:func:`~unet_edu.diffusion.diffusion_loss`, the samplers), so a
    forward pass never waits for the GPU and compiles with ``torch.compile(fullgraph=True)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 32,
        channel_mult=(1, 2, 2),
        num_res_blocks: int = 2,
        attention_levels=None,
        num_heads: int = 4,
        dropout: float = 0.0,
        num_classes: int | None = None,
        context_dim: int | None = None,
        time_conditioning: bool = True,
        skip: str = "concat",
        norm_groups: int = 32,
        time_mode: str = "scale_shift",
        num_timesteps: int = 1000,
        transformer_depth=None,
        linear_projection: bool | None = None,
        head_channels: int | None = None,
        label_dim: int | None = None,
    ):
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        if not channel_mult or min(channel_mult) < 1:
            raise ValueError(
                f"channel_mult needs one positive multiplier per level, got {channel_mult}; "
                f"e.g. (1, 2, 2) for three levels"
            )
        levels = len(channel_mult)
        if attention_levels is None:
            attention_levels = (levels - 1,)
        attention_levels = tuple(int(a) for a in attention_levels)
        bad = [a for a in attention_levels if not 0 <= a < levels]
        if bad:
            raise ValueError(
                f"attention_levels {bad} do not exist: this model has levels 0..{levels - 1} "
                f"(channel_mult={channel_mult})"
            )
        if skip not in ("concat", "none"):
            raise ValueError(
                f"DiffusionUNet skip must be 'concat' or 'none', got {skip!r} (UNet2015 also has "
                f"'add')"
            )
        if num_classes is not None and num_classes < 1:
            raise ValueError(
                f"num_classes must be at least 1, got {num_classes}; use num_classes=None for a "
                f"model without class labels"
            )
        if num_classes is not None and label_dim is not None:
            raise ValueError(
                f"DiffusionUNet: num_classes={num_classes} and label_dim={label_dim} both "
                f"describe y; use num_classes for class ids or label_dim for label vectors")
        depths = self._transformer_depths(transformer_depth, levels, attention_levels)
        self.levels = levels
        emb_dim = 4 * base_channels
        conditioned = time_conditioning or num_classes is not None or label_dim is not None

        # Embeddings: timestep -> sinusoids -> MLP; optional class table (+1 null class).
        self.time_embed = (
            nn.Sequential(
                SinusoidalTimeEmbedding(base_channels),
                nn.Linear(base_channels, emb_dim),
                nn.SiLU(),
                nn.Linear(emb_dim, emb_dim),
            )
            if time_conditioning
            else None
        )
        self.class_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.label_embed = (
            nn.Sequential(nn.Linear(label_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            if label_dim
            else None
        )

        def res(cin, cout):
            emb = emb_dim if conditioned else None
            return ResBlock(cin, cout, emb, dropout, norm_groups, time_mode)

        def attn(ch, depth=None):
            heads = num_heads
            if head_channels is not None:
                if head_channels < 1 or ch % head_channels:
                    raise ValueError(
                        f"DiffusionUNet: head_channels={head_channels} does not divide the "
                        f"{ch} channels of an attention level; use a divisor of every "
                        f"attention level's width (e.g. 64 for 320/640/1280)")
                heads = ch // head_channels
            if depths is not None:
                return nn.ModuleList([SpatialTransformer(ch, heads, context_dim, depth,
                                                         norm_groups, bool(linear_projection))])
            layers = nn.ModuleList([SelfAttention(ch, heads, norm_groups)])
            if context_dim is not None:
                layers.append(CrossAttention(ch, context_dim, heads, norm_groups))
            return layers

        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        # Encoder: remember the channel count of every map we will hand to the decoder.
        self.down = nn.ModuleList()
        skip_channels = [base_channels]
        ch = base_channels
        for level, mult in enumerate(channel_mult):
            stage = nn.ModuleDict({"blocks": nn.ModuleList(), "attns": nn.ModuleList()})
            for _ in range(num_res_blocks):
                stage["blocks"].append(res(ch, base_channels * mult))
                ch = base_channels * mult
                stage["attns"].append(attn(ch, depths and depths[level])
                                      if level in attention_levels else nn.ModuleList())
                skip_channels.append(ch)
            if level < levels - 1:
                stage["down"] = Downsample(ch)
                skip_channels.append(ch)
            self.down.append(stage)

        self.mid_block1 = res(ch, ch)
        self.mid_attn = attn(ch, depths and depths[-1])
        self.mid_block2 = res(ch, ch)

        # Decoder: one more ResBlock per level than the encoder, each eating one skip map.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            stage = nn.ModuleDict({"blocks": nn.ModuleList(), "attns": nn.ModuleList()})
            for _ in range(num_res_blocks + 1):
                s = skip_channels.pop()
                cin = ch + s if skip == "concat" else ch
                stage["blocks"].append(res(cin, base_channels * mult))
                ch = base_channels * mult
                stage["attns"].append(attn(ch, depths and depths[level])
                                      if level in attention_levels else nn.ModuleList())
            if level > 0:
                stage["up"] = Upsample(ch)
            self.up.append(stage)

        self.norm_out = group_norm(ch, norm_groups, "DiffusionUNet output")
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    @staticmethod
    def _transformer_depths(depth, levels: int, attention_levels) -> tuple[int, ...] | None:
        """``transformer_depth`` as one number per level (``None``: chapter 5's attention)."""
        if depth is None:
            return None
        depths = (depth,) * levels if isinstance(depth, int) else tuple(int(d) for d in depth)
        if len(depths) != levels:
            raise ValueError(
                f"transformer_depth {tuple(depth)} has {len(depths)} numbers but the model has "
                f"{levels} levels; give one number per level (0 where there is no attention) "
                f"or a single number for all")
        thin = [a for a in attention_levels if depths[a] < 1]
        if thin or depths[-1] < 1:
            raise ValueError(
                f"transformer_depth {depths}: the attention levels {sorted(attention_levels)} "
                f"and the middle (which takes the last number) need at least one block each; "
                f"raise those numbers or drop the levels from attention_levels")
        return depths

    # ------------------------------------------------------------------------------------------
    def embed(self, t, y=None) -> torch.Tensor | None:
        """The conditioning vector every ResBlock receives (time and label
        embeddings summed)."""
        emb = None
        if self.time_embed is not None:
            # The sinusoids are computed in float32 (t reaches 999,
            # which half precision cannot resolve finely); the MLP then
            # runs in the dtype of its weights, so a model converted with
            # model.half() works (for float32 the cast does nothing).
            emb = t
            for layer in self.time_embed:
                if isinstance(layer, nn.Linear):
                    emb = emb.to(layer.weight.dtype)
                emb = layer(emb)
        for table in (self.class_embed, self.label_embed):
            if table is not None:
                e = table(y)
                emb = e if emb is None else emb + e
        return emb

    def _check_inputs(self, x, t, y, context):
        """Shapes and dtypes of every input (metadata only: no value is read from the device)."""
        cfg = self.config
        check_batch(x, cfg["in_channels"], "DiffusionUNet", 2, self.conv_in.weight.dtype)
        check_halvings(x, self.levels, "DiffusionUNet")
        b = x.shape[0]
        if cfg["time_conditioning"]:
            t = self._check_timesteps(t, b, x.device)
        n = cfg["num_classes"]
        if cfg.get("label_dim"):
            y = self._check_label_vectors(y, b, cfg["label_dim"])
        elif n is None and y is not None:
            raise ValueError(
                "DiffusionUNet: got class labels y, but the model is unconditional; build it with "
                "num_classes=<number of classes> or call it without y"
            )
        if n is not None:
            if y is None:
                y = torch.full((b,), n, dtype=torch.long, device=x.device)  # the null class
            y = torch.as_tensor(y, device=x.device)
            if y.is_floating_point():
                raise ValueError(f"DiffusionUNet: labels must be integer class ids, got {y.dtype}; "
                                 f"use y.long()")
            if y.dim() == 0:
                y = y.expand(b)
            if y.shape != (b,):
                raise ValueError(f"DiffusionUNet: y must be {b} labels, one per image, got shape "
                                 f"{tuple(y.shape)}")
        if cfg["context_dim"] is None and context is not None:
            raise ValueError(
                "DiffusionUNet: got a context, but the model was built without context_dim"
            )
        if cfg["context_dim"] is not None and context is None:
            raise ValueError(
                f"DiffusionUNet: this model cross-attends to a context; pass context of shape "
                f"({b}, N, {cfg['context_dim']})"
            )
        return t, y

    @staticmethod
    def _check_label_vectors(y, batch: int, label_dim: int) -> torch.Tensor:
        """``y`` for a model built with ``label_dim``: one float vector per image."""
        if y is None or not isinstance(y, torch.Tensor) or y.shape != (batch, label_dim):
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(
                f"DiffusionUNet was built with label_dim={label_dim}: pass y, one label vector "
                f"per image, of shape ({batch}, {label_dim}); got {got}")
        if not y.is_floating_point():
            raise ValueError(f"DiffusionUNet: label vectors y must be floats, got {y.dtype}; "
                             f"use y.float()")
        return y

    @staticmethod
    def _check_timesteps(t, batch: int, device) -> torch.Tensor:
        """``t``: a number or one timestep per image, returned as ``batch`` floats on ``device``."""
        if t is None:
            raise ValueError(
                "DiffusionUNet needs the timestep t (one value per image); build it with "
                "time_conditioning=False for a model that ignores t"
            )
        t = torch.as_tensor(t, device=device)
        if t.dim() == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(
                f"DiffusionUNet: t must have shape ({batch},), one timestep per image, got shape "
                f"{tuple(t.shape)}; use t.view(-1) or torch.full(({batch},), step)"
            )
        return t.float()

    @staticmethod
    def _attend(layers, h, context):
        for layer in layers:
            takes_context = isinstance(layer, (CrossAttention, SpatialTransformer))
            h = layer(h, context) if takes_context else layer(h)
        return h

    def forward(self, x, t=None, y=None, context=None) -> torch.Tensor:
        t, y = self._check_inputs(x, t, y, context)
        emb = self.embed(t, y)
        h = self.conv_in(x)
        skips = [h]
        for stage in self.down:
            for block, attn in zip(stage["blocks"], stage["attns"]):
                h = self._attend(attn, block(h, emb), context)
                skips.append(h)
            if "down" in stage:
                h = stage["down"](h)
                skips.append(h)
        h = self.mid_block1(h, emb)
        h = self._attend(self.mid_attn, h, context)
        h = self.mid_block2(h, emb)
        for stage in self.up:
            for block, attn in zip(stage["blocks"], stage["attns"]):
                s = skips.pop()
                if self.config["skip"] == "concat":
                    h = torch.cat([h, s], dim=1)
                h = self._attend(attn, block(h, emb), context)
            if "up" in stage:
                h = stage["up"](h)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))
