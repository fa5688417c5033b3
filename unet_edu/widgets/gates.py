"""Gate explorer (chapter 6): where the attention gates of an Attention U-Net let the skips through.

For each image the frame shows the input, the true mask, the model's prediction and the gate map
``alpha`` of every skip connection (top level first, each at its own resolution), in the book's
gate colours with their colour bar (:data:`unet_edu.style.CMAPS`).  Frames are precomputed and
switched by a slider in the browser (see :mod:`unet_edu.widgets.frames`), so the explorer works
on the static website too, and through a Python observer in a live kernel.

Inputs are checked first (:mod:`unet_edu.widgets.inputs`): NumPy arrays and 8-bit pictures are
converted, masks must have the images' size (they are never resized), and NaN pixels, a model
with NaN weights or a size the model cannot take are refused with the fix.
"""

from __future__ import annotations

import io

import ipywidgets as W
import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from ..runtime import eval_mode
from ..style import CMAPS
from .frames import caption_html, colorbar_html, frame_image, frame_style, linked_stack
from .inputs import as_pictures, check_finite, check_fits, check_model_finite

__all__ = ["gate_maps_for", "gate_frames", "gate_panels", "GateExplorer"]

GAP = 2  # white pixels between panels
COLUMNS = 3  # panels per row: three fill the column at over twice the first edition's size
BOX_WIDTH = 660  # CSS pixels of a frame's box (about 220 per panel; 100 in the first edition)


@torch.no_grad()
def gate_maps_for(model, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``model`` (an :class:`~unet_edu.models.AttentionUNet`) in eval mode on ``images``.

    Returns the predicted labels ``(N, H, W)`` and the gate maps, top level first, each
    ``(N, H_i, W_i)`` with values in [0, 1].  The model's train/eval mode is restored.
    """
    if not getattr(model, "config", {}).get("gates", False):
        raise ValueError("gate_maps_for needs an AttentionUNet built with gates=True")
    with eval_mode(model):
        device = next(model.parameters()).device
        pred = model(images.to(device)).argmax(1).cpu()
        maps = [a[:, 0].cpu() for a in model.gate_maps()]
    return pred, maps


def _panel_rgb(img: torch.Tensor, cmap: str, value_range, size: tuple[int, int]) -> torch.Tensor:
    """One ``(H, W)`` panel as RGB in [0, 1], enlarged (nearest) to ``size`` if smaller."""
    img = img.detach().float().cpu()
    lo, hi = value_range if value_range else (float(img.min()), float(img.max()))
    unit = ((img - lo) / (hi - lo + 1e-8)).clamp(0, 1)
    if tuple(unit.shape) != size:  # a gate map of a lower level: one cell per pixel it gates
        unit = torch.nn.functional.interpolate(unit[None, None], size=size, mode="nearest")[0, 0]
    return torch.from_numpy(colormaps[cmap](unit.numpy())[..., :3]).float()


def gate_panels(masks_given: bool, maps) -> list[str]:
    """The titles of a frame's panels, left to right."""
    titles = ["input"] + (["true mask"] if masks_given else []) + ["prediction"]
    return titles + [f"gate, level {i} ({m.shape[-2]}x{m.shape[-1]})" for i, m in enumerate(maps)]


def gate_frames(model, images: torch.Tensor, masks: torch.Tensor | None = None) -> list[bytes]:
    """One small PNG per image: input, (truth,) prediction and every gate map, three a row.

    Panels are drawn at the input's resolution (gate maps of lower levels enlarged without
    smoothing), two white pixels apart; the page enlarges the whole picture.  ``masks`` are
    ``(N, H, W)`` (or ``(N, 1, H, W)``) labels of the images' own size.
    """
    images, masks = _checked(model, images, masks)
    pred, maps = gate_maps_for(model, images)
    size = tuple(images.shape[-2:])
    frames = []
    for k in range(len(images)):
        panels = [_panel_rgb(images[k, 0], "gray", None, size)]
        if masks is not None:
            panels.append(_panel_rgb(masks[k], "gray", (0, 1), size))
        panels.append(_panel_rgb(pred[k], "gray", (0, 1), size))
        panels += [_panel_rgb(m[k], CMAPS["gate"], (0, 1), size) for m in maps]
        strip = _tile(panels, COLUMNS)
        buf = io.BytesIO()
        Image.fromarray((strip * 255).round().to(torch.uint8).numpy(), mode="RGB").save(
            buf, format="png", optimize=True)
        frames.append(buf.getvalue())
    return frames


def _tile(panels: list[torch.Tensor], columns: int) -> torch.Tensor:
    """Panels ``(H, W, 3)`` in rows of ``columns``, ``GAP`` white pixels apart (white fills
    the last row)."""
    h, w, _ = panels[0].shape
    blank = torch.ones(h, w, 3)
    rows = []
    for i in range(0, len(panels), columns):
        row = panels[i:i + columns]
        row = row + [blank] * (columns - len(row))
        gap = torch.ones(h, GAP, 3)
        rows.append(torch.cat([p for panel in row for p in (panel, gap)][:-1], dim=1))
    gap = torch.ones(GAP, rows[0].shape[1], 3)
    return torch.cat([p for row in rows for p in (row, gap)][:-1], dim=0)


def _as_labels(masks, where: str) -> torch.Tensor:
    """Masks are labels (0 background, 1 cell): integers, booleans or whole-number floats,
    kept as they are (never divided by 255)."""
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(np.ascontiguousarray(masks))
    if not isinstance(masks, torch.Tensor):
        raise ValueError(f"{where}: masks must be a torch.Tensor or a NumPy array of labels, "
                         f"got {type(masks).__name__}")
    masks = masks.detach().cpu()
    if masks.dim() not in (3, 4):
        raise ValueError(f"{where}: masks must be (N, H, W) labels, one per image, got shape "
                         f"{tuple(masks.shape)}")
    if masks.is_floating_point():
        check_finite(masks, "masks", where)
        if not torch.equal(masks, masks.round()):
            raise ValueError(f"{where}: masks hold fractions; they are labels (0 background, "
                             f"1 cell): pass y_test, or (mask > 0.5).long()")
    elif masks.is_complex():
        raise ValueError(f"{where}: masks must be labels, got dtype {masks.dtype}")
    return masks.float()


def _checked(model, images, masks):
    """The images and masks as float CPU tensors, checked (see the module docstring)."""
    where = "GateExplorer"
    if not getattr(model, "config", {}).get("gates", False):
        raise ValueError(f"{where} needs an AttentionUNet built with gates=True, got "
                         f"{type(model).__name__}"
                         + (" without gates" if type(model).__name__ == "AttentionUNet" else ""))
    check_model_finite(model, "model", where)
    images = as_pictures(images, "images", where, 4)
    check_fits(model, images.shape, "model", where)
    if masks is None:
        return images, None
    masks = _as_labels(masks, where)
    if masks.dim() == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"{where}: masks have {masks.shape[1]} channels; pass one label "
                             f"map per image, (N, H, W)")
        masks = masks[:, 0]
    if len(masks) != len(images):
        raise ValueError(f"{where}: {len(masks)} masks for {len(images)} images: pass one mask "
                         f"per image")
    if tuple(masks.shape[-2:]) != tuple(images.shape[-2:]):
        raise ValueError(f"{where}: masks are {masks.shape[-2]} x {masks.shape[-1]} but the "
                         f"images {images.shape[-2]} x {images.shape[-1]}; pass the masks that "
                         f"belong to these images (they are not resized, which would move "
                         f"their borders)")
    return images, masks


def GateExplorer(model, images, masks=None) -> W.Widget:
    """A slider over ``images`` showing the gate maps of ``model`` for each one.

    ``model`` is an :class:`~unet_edu.models.AttentionUNet` with gates; ``images`` a batch
    ``(N, C, H, W)`` and ``masks`` their true labels ``(N, H, W)``, tensors or NumPy arrays.
    """
    images, masks = _checked(model, images, masks)
    frames = gate_frames(model, images, masks)
    titles = gate_panels(masks is not None, model.gate_maps())
    slider = W.IntSlider(value=0, min=0, max=len(frames) - 1, description="image",
                         continuous_update=True, layout=W.Layout(width="100%", max_width="420px"))
    shared = W.Layout()
    stack = linked_stack([frame_image(f, "unet-edu-gate-frame", shared) for f in frames], slider,
                         layout=W.Layout(width="100%"))
    h, w = images.shape[-2:]
    rows = -(-len(titles) // COLUMNS)
    strip_w, strip_h = COLUMNS * w + (COLUMNS - 1) * GAP, rows * h + (rows - 1) * GAP
    lines = [" &nbsp;|&nbsp; ".join(titles[i:i + COLUMNS]) for i in range(0, len(titles), COLUMNS)]
    header = W.HTML("<br>".join(f"row {r + 1}: {line}" for r, line in enumerate(lines)))
    note = W.HTML(colorbar_html(CMAPS["gate"], 0.0, 1.0, "gate value", BOX_WIDTH // 2)
                  + caption_html("<small>Bright: the gate lets the encoder's features "
                                 "through; dark: it blocks them. Frames are precomputed, so "
                                 "the slider also works without a kernel.</small>"),
                  layout=W.Layout(max_width=f"{BOX_WIDTH}px"))
    return W.VBox([slider, header, stack, note,
                   frame_style("unet-edu-gate-frame", BOX_WIDTH,
                               round(BOX_WIDTH * strip_h / strip_w))])
