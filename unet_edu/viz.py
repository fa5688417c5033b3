"""Pictures: image grids, receptive-field overlays, loss curves (matplotlib).

Every function draws into a given ``ax`` when one is passed (so chapters can compose figures)
and otherwise makes its own figure; all return the ``Axes`` they drew on.
"""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import torch
from torchvision.utils import make_grid

__all__ = ["show_images", "rf_overlay", "plot_history", "LiveLossPlot", "figure_to_png",
           "image_to_png"]


def _ax(ax, figsize=(7, 7)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def show_images(images: torch.Tensor, nrow: int = 8, title: str | None = None, ax=None,
                value_range=None, cmap: str = "gray"):
    """Draw a batch ``(N, C, H, W)`` as one grid.

    ``value_range=(lo, hi)`` fixes the grey scale (e.g. ``(-1, 1)`` for diffusion samples);
    by default each call scales to its own min and max.
    """
    images = images.detach().float().cpu()
    if value_range is not None:
        lo, hi = value_range
        images = ((images - lo) / (hi - lo)).clamp(0, 1)
    else:
        images = (images - images.min()) / (images.max() - images.min() + 1e-8)
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=1.0)
    # On its own figure, the grid fills the page's column (7.5 inches) at its own aspect ratio.
    height = min(7.5, 7.5 * grid.shape[1] / grid.shape[2] + (0.4 if title else 0.0))
    ax = _ax(ax, figsize=(7.5, max(height, 1.0)))
    ax.imshow(grid[0] if grid.shape[0] == 1 or images.shape[1] == 1 else grid.permute(1, 2, 0),
              cmap=cmap, vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def rf_overlay(image: torch.Tensor, mask: torch.Tensor | None = None, heatmap: torch.Tensor | None = None,
               position=None, ax=None, title: str | None = None, scale: str = "linear",
               decades: float = 3.0):
    """An input image with a receptive field on top.

    ``mask`` (bool ``(H, W)``) is outlined in red, ``heatmap`` (an effective receptive field)
    is shown in semi-transparent colour, and ``position`` ``(row, col)`` marks the pixel.
    ``scale="log"`` colours the heatmap on a logarithmic scale spanning ``decades`` powers of
    ten below its peak: an effective field is a sharp peak with a wide, faint halo, and on a
    linear scale the halo, which can hold much of the total, is invisible.
    """
    from matplotlib.colors import LogNorm

    if scale not in ("linear", "log"):
        raise ValueError(f"scale must be 'linear' or 'log', got {scale!r}")
    image = image.detach().float().cpu().squeeze()
    ax = _ax(ax, figsize=(5, 5))  # one square image: narrower than the column, or it is too tall
    ax.imshow(image, cmap="gray")
    if heatmap is not None:
        h = heatmap.detach().float().cpu()
        h = h / (h.max() + 1e-12)
        if scale == "log":
            floor = 10.0 ** -decades
            ax.imshow(torch.where(h >= floor, h, torch.nan), cmap="inferno", alpha=0.6,
                      norm=LogNorm(vmin=floor, vmax=1.0))
        else:
            ax.imshow(h, cmap="inferno", alpha=0.6)
    if mask is not None:
        ax.contour(mask.detach().cpu().float().numpy(), levels=[0.5], colors="red", linewidths=1.5)
    if position is not None:
        ax.plot(position[1], position[0], marker="+", color="cyan", markersize=12, mew=2)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def plot_history(history, ax=None, label: str | None = None, window: int = 25, logy: bool = True):
    """Loss curve of a :class:`~unet_edu.train.History`: raw (faint) and smoothed."""
    ax = _ax(ax, figsize=(7.5, 3.5))
    line = ax.plot(history.steps, history.losses, alpha=0.25)[0]
    ax.plot(history.steps, history.smoothed(window), color=line.get_color(), label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if logy:
        ax.set_yscale("log")
    if label:
        ax.legend()
    return ax


class LiveLossPlot:
    """A loss curve that redraws itself while training runs: ``fit(..., callback=LiveLossPlot())``.

    ``fit`` calls it with ``(step, loss)`` after every step; every ``every`` steps (and at the
    last one, ``total``) it redraws :func:`plot_history` of the losses so far in one notebook
    output that is updated in place, so a learner sees the curve fall instead of waiting for the
    end.  Outside a notebook it only records.  ``history`` holds what was recorded.
    """

    def __init__(self, every: int = 50, total: int | None = None, window: int = 25,
                 title: str = "training loss", figsize=(7.5, 3)):
        if every < 1:
            raise ValueError(f"every must be at least 1 step, got {every}")
        from .train import History

        self.history = History()
        self.every, self.total, self.window, self.title, self.figsize = every, total, window, title, figsize
        self._handle = None

    def __call__(self, step: int, loss: float) -> None:
        self.history.steps.append(int(step))
        self.history.losses.append(float(loss))
        if step % self.every == 0 or step == self.total:
            self.draw()

    def draw(self) -> None:
        """Redraw the curve in the notebook output (nothing to do outside a notebook)."""
        try:
            from IPython import get_ipython
            from IPython.display import Image, display
        except ImportError:
            return
        shell = get_ipython()
        if shell is None or not hasattr(shell, "kernel") or not self.history.steps:
            return
        from matplotlib.figure import Figure

        # A bare Figure, not pyplot's: no backend or figure manager is involved while training.
        fig = Figure(figsize=self.figsize)
        ax = fig.add_subplot()
        plot_history(self.history, ax=ax, window=min(self.window, len(self.history.steps)))
        ax.set_title(f"{self.title}: step {self.history.steps[-1]:,}"
                     + (f" of {self.total:,}" if self.total else ""), fontsize=10)
        frame = Image(data=figure_to_png(fig, dpi=90))
        if self._handle is None:
            self._handle = display(frame, display_id=True)
        else:
            self._handle.update(frame)


def figure_to_png(fig, dpi: int = 80) -> bytes:
    """Render a matplotlib figure to PNG bytes (for image widgets) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def image_to_png(img: torch.Tensor, value_range=(0.0, 1.0), scale: int = 4, cmap: str = "gray") -> bytes:
    """A single-channel ``(H, W)`` tensor as PNG bytes, enlarged ``scale`` times (no smoothing)."""
    img = img.detach().float().cpu().squeeze()
    lo, hi = value_range
    img = ((img - lo) / (hi - lo)).clamp(0, 1)
    img = img.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    buf = io.BytesIO()
    plt.imsave(buf, img.numpy(), cmap=cmap, vmin=0, vmax=1, format="png")
    return buf.getvalue()
