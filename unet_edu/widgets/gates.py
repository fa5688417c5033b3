"""Gate explorer (chapter 6): where the attention gates of an Attention U-Net let the skips through.

For each image the frame shows the input, the true mask, the model's prediction and the gate map
``alpha`` of every skip connection (top level first, each at its own resolution).  Frames are
precomputed and switched by a slider in the browser (see :mod:`unet_edu.widgets.frames`), so the
explorer works on the static website too.
"""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import torch

from ..viz import figure_to_png
from .frames import linked_stack, png_image

__all__ = ["gate_maps_for", "gate_frames", "GateExplorer"]


@torch.no_grad()
def gate_maps_for(model, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``model`` (an :class:`~unet_edu.models.AttentionUNet`) in eval mode on ``images``.

    Returns the predicted labels ``(N, H, W)`` and the gate maps, top level first, each
    ``(N, H_i, W_i)`` with values in [0, 1].  The model's train/eval mode is restored.
    """
    if not getattr(model, "config", {}).get("gates", False):
        raise ValueError("gate_maps_for needs an AttentionUNet built with gates=True")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        pred = model(images.to(device)).argmax(1).cpu()
        maps = [a[:, 0].cpu() for a in model.gate_maps()]
    finally:
        model.train(was_training)
    return pred, maps


def gate_frames(model, images: torch.Tensor, masks: torch.Tensor | None = None, dpi: int = 60) -> list[bytes]:
    """One PNG per image: input, (truth,) prediction and every gate map in a row."""
    pred, maps = gate_maps_for(model, images)
    frames = []
    for k in range(len(images)):
        panels = [("input", images[k, 0].cpu(), "gray", None)]
        if masks is not None:
            panels.append(("true mask", masks[k].cpu(), "gray", (0, 1)))
        panels.append(("prediction", pred[k], "gray", (0, 1)))
        for i, m in enumerate(maps):
            side = m.shape[-1]
            panels.append((f"gate, level {i} ({side}x{side})", m[k], "magma", (0, 1)))
        fig, axes = plt.subplots(1, len(panels), figsize=(2.1 * len(panels), 2.4))
        for ax, (title, img, cmap, rng) in zip(axes, panels):
            lo, hi = rng if rng else (None, None)
            ax.imshow(img.float().numpy(), cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.set_axis_off()
        frames.append(figure_to_png(fig, dpi=dpi))
    return frames


def GateExplorer(model, images: torch.Tensor, masks: torch.Tensor | None = None) -> W.Widget:
    """A slider over ``images`` showing the gate maps of ``model`` for each one."""
    frames = gate_frames(model, images, masks)
    slider = W.IntSlider(value=0, min=0, max=len(frames) - 1, description="image",
                         continuous_update=True)
    stack = linked_stack([png_image(f) for f in frames], slider)
    note = W.HTML("<small>Bright: the gate lets the encoder's features through; dark: it "
                  "blocks them. Frames are precomputed, so the slider also works without a kernel.</small>")
    return W.VBox([slider, stack, note])
