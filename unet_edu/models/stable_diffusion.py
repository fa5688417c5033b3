"""The U-Nets of Stable Diffusion 1.5 and SDXL, rebuilt as configurations of :class:`DiffusionUNet`.

Stable Diffusion (Rombach et al., 2022) denoises a ``4 x 64 x 64`` latent (a ``512 x 512`` image
seen through its autoencoder) with the same U as chapter 5: ResBlocks with a time embedding,
strided-convolution downsampling, nearest + convolution upsampling, one skip per encoder map.
What it adds sits at the attention levels: a :class:`~unet_edu.blocks.SpatialTransformer`
whose blocks cross-attend to the text encoder's tokens.  The published configurations:

* **SD 1.5** — widths 320/640/1280/1280, two ResBlocks per level, one transformer block at the
  three upper levels and in the middle, 8 heads, cross-attention to CLIP ViT-L/14's 77 tokens
  of 768 numbers, ``proj_in``/``proj_out`` as 1x1 convolutions.  The time embedding is added
  (no scale-shift) to each ResBlock: SD adds it before the block's second GroupNorm, the
  package's ``time_mode="add"`` after it, with the same parameters.
* **SDXL** (Podell et al., 2023) — widths 320/640/1280 (three levels), no attention at the
  top level, 2 transformer blocks at the middle level and 10 at the lowest and in the middle,
  64 channels per head, 2,048-wide text tokens (two text encoders concatenated),
  ``proj_in``/``proj_out`` linear, and an extra embedding: the pooled text vector (1,280)
  and Fourier features of the image's original size, crop corner and target size (6 x 256),
  2,816 numbers through a two-layer MLP, added to the time embedding.

:func:`stable_diffusion_unet` builds either on PyTorch's meta device (shapes, no weights: no
memory, nothing downloaded), and :data:`PUBLISHED_PARAMETERS` holds the parameter counts of
the released ``UNet2DConditionModel`` weights that the book's tests match to the parameter.
:func:`level_table` breaks a U-Net's parameters down by level and counts where it reads the
text (:func:`bottleneck_share` sums that up); :func:`example_inputs` gives the inputs for one
forward pass, e.g. for :func:`unet_edu.diagrams.unet_diagram`.
"""

from __future__ import annotations

import math

import torch

from ..blocks import SinusoidalTimeEmbedding
from .diffusion_unet import DiffusionUNet

__all__ = ["CONFIGS", "PUBLISHED_PARAMETERS", "LATENT_SHAPES", "TEXT_TOKENS",
           "stable_diffusion_unet", "example_inputs", "sdxl_label", "level_table",
           "bottleneck_share"]

CONFIGS = {
    # runwayml/stable-diffusion-v1-5, unet/config.json: block_out_channels (320, 640, 1280,
    # 1280), layers_per_block 2, CrossAttn blocks at the three upper levels and the middle,
    # attention_head_dim 8 (used as the number of heads), cross_attention_dim 768.
    "sd-1.5": dict(in_channels=4, out_channels=4, base_channels=320, channel_mult=(1, 2, 4, 4),
                   num_res_blocks=2, attention_levels=(0, 1, 2), num_heads=8, context_dim=768,
                   norm_groups=32, time_mode="add", transformer_depth=1),
    # stabilityai/stable-diffusion-xl-base-1.0, unet/config.json: block_out_channels (320, 640,
    # 1280), transformer_layers_per_block (1, 2, 10) with no attention at the first level,
    # cross_attention_dim 2048, use_linear_projection, 64 channels per head, and the
    # "text_time" addition embedding of 2,816 inputs.
    "sdxl": dict(in_channels=4, out_channels=4, base_channels=320, channel_mult=(1, 2, 4),
                 num_res_blocks=2, attention_levels=(1, 2), context_dim=2048, norm_groups=32,
                 time_mode="add", transformer_depth=(0, 2, 10), linear_projection=True,
                 head_channels=64, label_dim=2816),
}

# Parameters of the released U-Nets, as PyTorch counts them (sum of numel over parameters) for
# diffusers' UNet2DConditionModel with the weights above.  The SDXL paper rounds to 2.6B.
PUBLISHED_PARAMETERS = {"sd-1.5": 859_520_964, "sdxl": 2_567_463_684}

# The latent each model is trained on (a 512 x 512 and a 1024 x 1024 image, downsampled 8x)
# and the text it reads: (tokens, width).
LATENT_SHAPES = {"sd-1.5": (4, 64, 64), "sdxl": (4, 128, 128)}
TEXT_TOKENS = {"sd-1.5": (77, 768), "sdxl": (77, 2048)}

SDXL_POOLED_DIM = 1280  # the pooled output of OpenCLIP ViT-bigG
SDXL_SIZE_FEATURES = 256  # Fourier features per size or crop number


def _version(version: str) -> str:
    if version not in CONFIGS:
        raise ValueError(f"unknown Stable Diffusion version {version!r}; choose one of "
                         f"{', '.join(map(repr, CONFIGS))}")
    return version


def stable_diffusion_unet(version: str = "sd-1.5", device="meta") -> DiffusionUNet:
    """Build the U-Net of ``version`` (``"sd-1.5"`` or ``"sdxl"``) on ``device``.

    On the default ``"meta"`` device the model has shapes but no data: building SDXL's 2.6
    billion parameters takes seconds and no memory.  On a real device the weights are random
    (this is the architecture, not the trained model).
    """
    with torch.device(device):
        return DiffusionUNet(**CONFIGS[_version(version)])


def sdxl_label(pooled_text: torch.Tensor, original_size, crop_top_left,
               target_size) -> torch.Tensor:
    """SDXL's extra conditioning vector ``y`` ``(B, 2816)`` (Podell et al., 2023, sec. 2.2).

    ``pooled_text`` ``(B, 1280)`` is the pooled text embedding; each of the six numbers
    (original height and width, crop top and left, target height and width, in pixels) is
    turned into 256 Fourier features (:class:`~unet_edu.blocks.SinusoidalTimeEmbedding`) and
    appended.  Telling the model the size an image had before it was resized, and where it
    was cropped, let SDXL train on small and cropped images without learning to draw them
    small or cut off: at sampling time one asks for ``original_size = target_size`` and crop
    ``(0, 0)``.
    """
    if pooled_text.dim() != 2 or pooled_text.shape[1] != SDXL_POOLED_DIM:
        raise ValueError(f"sdxl_label: pooled_text must have shape (B, {SDXL_POOLED_DIM}), got "
                         f"{tuple(pooled_text.shape)}")
    numbers = [float(v) for pair in (original_size, crop_top_left, target_size) for v in pair]
    if len(numbers) != 6 or not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"sdxl_label: give (height, width) pairs of finite numbers for "
                         f"original_size, crop_top_left and target_size, got "
                         f"{original_size!r}, {crop_top_left!r}, {target_size!r}")
    b = pooled_text.shape[0]
    values = torch.tensor(numbers, device=pooled_text.device).repeat(b)  # (B * 6,)
    fourier = SinusoidalTimeEmbedding(SDXL_SIZE_FEATURES).to(pooled_text.device)(values)
    return torch.cat([pooled_text, fourier.reshape(b, -1).to(pooled_text.dtype)], dim=1)


def example_inputs(version: str = "sd-1.5", batch: int = 1, device="meta") -> dict:
    """Inputs for one forward pass of :func:`stable_diffusion_unet` ``(version)``: ``x``,
    ``t``, ``context`` (the text tokens) and, for SDXL, ``y`` (:func:`sdxl_label` of a
    1024 x 1024 image).  Zeros on the meta device by default, e.g. for
    ``unet_diagram(model, x.shape[1:], **rest)``."""
    version = _version(version)
    tokens, width = TEXT_TOKENS[version]
    inputs = {"x": torch.zeros(batch, *LATENT_SHAPES[version], device=device),
              "t": torch.zeros(batch, dtype=torch.long, device=device),
              "context": torch.zeros(batch, tokens, width, device=device)}
    if version == "sdxl":
        pooled = torch.zeros(batch, SDXL_POOLED_DIM, device=device)
        inputs["y"] = sdxl_label(pooled, (1024, 1024), (0, 0), (1024, 1024))
    return inputs


def _count(modules) -> int:
    return sum(p.numel() for m in modules if m is not None for p in m.parameters())


def level_table(model: DiffusionUNet, input_size: int | None = None) -> list[dict]:
    """The parameters of a :class:`DiffusionUNet`, level by level, as table rows.

    One row for the embeddings (time, class or label), one for the input and output
    convolutions, then per level ``"down"`` (ResBlocks, attention, downsampling) and ``"up"``
    (ResBlocks, attention, upsampling), with the middle block between them.  Each row has
    ``part``, ``level``, ``channels``, ``size`` (the side of the map for a square input of
    ``input_size``, when given), ``res_blocks``, ``transformer_blocks`` (blocks of the
    SpatialTransformers; 0 with chapter 5's attention), ``cross_attention`` (layers that read
    the text: one per transformer block, or chapter 5's CrossAttention) and ``parameters``;
    the parameters of all rows add up to the model's.
    """
    from ..blocks import CrossAttention, MultiHeadAttention, SpatialTransformer

    def depth(attns) -> int:
        return sum(len(m.blocks) for m in attns.modules() if isinstance(m, SpatialTransformer))

    def cross(attns) -> int:
        return sum(isinstance(m, CrossAttention)
                   or (isinstance(m, MultiHeadAttention) and m.is_cross)
                   for m in attns.modules())

    def side(level):
        return None if input_size is None else input_size // 2**level

    cfg = model.config
    widths = [cfg["base_channels"] * m for m in cfg["channel_mult"]]
    rows = [{"part": "embeddings", "level": None, "channels": 4 * cfg["base_channels"],
             "size": None, "res_blocks": 0, "transformer_blocks": 0, "cross_attention": 0,
             "parameters": _count([model.time_embed, model.class_embed, model.label_embed])},
            {"part": "conv_in, norm_out, conv_out", "level": None, "channels": widths[0],
             "size": side(0), "res_blocks": 0, "transformer_blocks": 0, "cross_attention": 0,
             "parameters": _count([model.conv_in, model.norm_out, model.conv_out])}]
    for level, stage in enumerate(model.down):
        rows.append({"part": "down", "level": level, "channels": widths[level],
                     "size": side(level), "res_blocks": len(stage["blocks"]),
                     "transformer_blocks": depth(stage["attns"]),
                     "cross_attention": cross(stage["attns"]), "parameters": _count([stage])})
    mid = [model.mid_block1, model.mid_attn, model.mid_block2]
    rows.append({"part": "middle", "level": model.levels - 1, "channels": widths[-1],
                 "size": side(model.levels - 1), "res_blocks": 2,
                 "transformer_blocks": depth(model.mid_attn),
                 "cross_attention": cross(model.mid_attn), "parameters": _count(mid)})
    for i, stage in enumerate(model.up):
        level = model.levels - 1 - i
        rows.append({"part": "up", "level": level, "channels": widths[level],
                     "size": side(level), "res_blocks": len(stage["blocks"]),
                     "transformer_blocks": depth(stage["attns"]),
                     "cross_attention": cross(stage["attns"]), "parameters": _count([stage])})
    return rows


def bottleneck_share(model: DiffusionUNet) -> dict:
    """Where a U-Net reads the text: how many cross-attention layers sit in the middle block
    (the bottleneck) and how many elsewhere.

    A circulating description of Stable Diffusion says that "the bottleneck has
    cross-attention to the text embedding", as if the text entered there.  Counting settles
    it: ``{"middle": ..., "elsewhere": ..., "total": ..., "middle_fraction": ...,
    "levels": [levels outside the middle that read the text]}``.  SD 1.5 has 16
    cross-attention layers, one of them in the middle; SDXL 70, ten in the middle.
    """
    rows = level_table(model)
    middle = sum(r["cross_attention"] for r in rows if r["part"] == "middle")
    total = sum(r["cross_attention"] for r in rows)
    levels = sorted({r["level"] for r in rows
                     if r["part"] in ("down", "up") and r["cross_attention"]})
    return {"middle": middle, "elsewhere": total - middle, "total": total,
            "middle_fraction": middle / total if total else None, "levels": levels}
