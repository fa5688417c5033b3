"""Pictures: image grids, maps with their colour bars, receptive-field overlays, loss curves.

Every function draws into a given ``ax`` when one is passed (so chapters can compose figures)
and otherwise makes its own figure, with constrained layout; all return the ``Axes`` they drew
on.  Colours come from :mod:`unet_edu.style`: a loss curve takes the colour of its model's
family (:func:`~unet_edu.style.model_style`), and every image-valued map (a feature map, a
heat, probability, gate or error map) gets a colour bar (:func:`~unet_edu.style.colorbar`).

Importing this module leaves matplotlib's settings alone; ``style.use()`` applies the book's
sizes and sharp PNGs (each chapter calls it once).

Inputs may be torch tensors or NumPy arrays; pictures with NaN or infinite values are refused
with the count and the fix, because matplotlib would silently draw them as holes.
"""

from __future__ import annotations

import io
import weakref

import matplotlib.pyplot as plt
import torch
from torchvision.utils import make_grid

from . import style

__all__ = ["show_images", "show_map", "rf_overlay", "plot_history", "LiveLossPlot",
           "figure_to_png", "image_to_png"]

_GREYS = {"gray", "grey", "Greys", "Greys_r", "binary", "binary_r", "gray_r"}


def _ax(ax, figsize=(7, 7)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _finite_tensor(values, name: str) -> torch.Tensor:
    """``values`` (tensor or array) as a float CPU tensor; NaN or infinity is an error."""
    try:
        t = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a tensor or an array of numbers, got "
                         f"{type(values).__name__} ({err})") from None
    t = t.detach().cpu()
    if t.dtype == torch.bool or not t.is_floating_point():
        t = t.float()
    t = t.float()
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}): pass at least one value")
    bad = ~torch.isfinite(t)
    if bad.any():
        raise ValueError(f"{name} holds {int(bad.sum())} NaN or infinite value(s) of "
                         f"{t.numel()}: clean them first (torch.nan_to_num) or find where "
                         f"they come from")
    return t


def _range(t: torch.Tensor, value_range, name: str) -> tuple[float, float]:
    if value_range is None:
        lo, hi = float(t.min()), float(t.max())
        return (lo, hi) if hi > lo else (lo, lo + 1.0)  # a flat picture is drawn flat
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range must be (low, high), got {value_range!r}") from None
    if not hi > lo:
        raise ValueError(f"value_range must go up, got {value_range!r}: give (low, high) with "
                         f"high > low, e.g. (0, 1) for pictures in [0, 1]")
    return lo, hi


def show_images(images, nrow: int = 8, title: str | None = None, ax=None, value_range=None,
                cmap: str = "gray", colorbar: bool | None = None, label: str | None = None):
    """Draw a batch ``(N, C, H, W)`` (or one ``(C, H, W)`` or ``(H, W)`` picture) as one grid.

    ``value_range=(lo, hi)`` fixes the scale (e.g. ``(-1, 1)`` for diffusion samples); by
    default each call spans its own minimum and maximum.  Single-channel pictures are drawn in
    ``cmap``; a colour bar (named ``label``) is added when ``colorbar`` is True, and by default
    whenever ``cmap`` is not grey, since then the pictures are a map of values (an error map,
    say), not photographs.
    """
    images = _finite_tensor(images, "images")
    if images.dim() == 2:
        images = images[None, None]
    elif images.dim() == 3:
        images = images[None]
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), (C, H, W) or (H, W), got shape "
                         f"{tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images have {images.shape[1]} channels; show_images draws 1 (a map "
                         f"or grey) or 3 (colour): pick channels, e.g. images[:, :1]")
    lo, hi = _range(images, value_range, "images")
    # On its own figure, the grid fills the page's column at its own aspect ratio.
    n = len(images)
    cols = min(nrow, n)
    rows = -(-n // cols)
    aspect = rows * (images.shape[-2] + 2) / (cols * (images.shape[-1] + 2))
    height = min(7.5, 7.5 * aspect + (0.4 if title else 0.0))
    ax = _ax(ax, figsize=(style.COLUMN_INCHES, max(height, 1.0)))
    if images.shape[1] == 1:
        # Gaps between pictures are NaN, drawn white by the colour map's "bad" colour, so the
        # picture keeps its own units and a colour bar reads true values.
        grid = make_grid(images, nrow=nrow, padding=2, pad_value=float("nan"))[0]
        shown = ax.imshow(grid.numpy(), cmap=plt.get_cmap(cmap).with_extremes(bad="white"),
                          vmin=lo, vmax=hi, interpolation="nearest")
        if colorbar or (colorbar is None and cmap not in _GREYS):
            style.colorbar(shown, ax=ax, label=label)
    else:
        if colorbar:
            raise ValueError("a colour bar needs single-channel pictures; colour pictures have "
                             "no colour scale: leave colorbar out")
        unit = ((images - lo) / (hi - lo)).clamp(0, 1)
        ax.imshow(make_grid(unit, nrow=nrow, padding=2, pad_value=1.0).permute(1, 2, 0).numpy(),
                  interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def show_map(values, ax=None, title: str | None = None, kind: str = "map", label: str | None = None,
             value_range=None, cmap: str | None = None):
    """One image-valued map ``(H, W)`` with its colour bar: a probability, error, gate, heat or
    feature map.

    ``kind`` picks the book's colour map for that kind of map (:data:`unet_edu.style.CMAPS`:
    ``"map"``, ``"heat"``, ``"gate"``, ``"error"``, ``"signed"``); ``cmap`` overrides it.
    ``"signed"`` maps are centred on 0.  ``label`` names the quantity on the colour bar.
    """
    if cmap is None:
        if kind not in style.CMAPS:
            raise ValueError(f"kind must be one of {sorted(style.CMAPS)}, got {kind!r}")
        cmap = style.CMAPS[kind]
    values = _finite_tensor(values, "values").squeeze()
    if values.dim() != 2:
        raise ValueError(f"show_map draws one map (H, W), got shape {tuple(values.shape)}: "
                         f"pick one, e.g. maps[0, 0]")
    if value_range is None and kind == "signed":
        reach = float(values.abs().max()) or 1.0
        value_range = (-reach, reach)
    lo, hi = _range(values, value_range, "values")
    ax = _ax(ax, figsize=(4.5, 3.8))
    shown = ax.imshow(values.numpy(), cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
    style.colorbar(shown, ax=ax, label=label)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def rf_overlay(image, mask=None, heatmap=None, position=None, ax=None, title: str | None = None,
               scale: str = "linear", decades: float = 3.0, colorbar: bool = True):
    """An input image with a receptive field on top.

    ``mask`` (bool ``(H, W)``) is outlined, ``heatmap`` (an effective receptive field) is shown
    in semi-transparent colour with a colour bar (its share of the peak), and ``position``
    ``(row, col)`` marks the pixel.  ``scale="log"`` colours the heatmap on a logarithmic scale
    spanning ``decades`` powers of ten below its peak: an effective field is a sharp peak with a
    wide, faint halo, and on a linear scale the halo, which can hold much of the total, is
    invisible.  The outline and the pixel have the colours of the receptive-field explorer
    (:data:`unet_edu.style.MARKS`).
    """
    from matplotlib.colors import LogNorm

    if scale not in ("linear", "log"):
        raise ValueError(f"scale must be 'linear' or 'log', got {scale!r}")
    image = _finite_tensor(image, "image").squeeze()
    if image.dim() != 2:
        raise ValueError(f"rf_overlay draws one single-channel image (H, W), got shape "
                         f"{tuple(image.shape)}")
    ax = _ax(ax, figsize=(5, 4.3))  # one square image: narrower than the column, or too tall
    ax.imshow(image.numpy(), cmap="gray", interpolation="nearest")
    if heatmap is not None:
        h = _finite_tensor(heatmap, "heatmap").squeeze()
        if h.shape != image.shape:
            raise ValueError(f"heatmap is {tuple(h.shape)} but the image {tuple(image.shape)}: "
                             f"pass the effective field computed for this image's size")
        h = h / (h.max() + 1e-12)
        if scale == "log":
            floor = 10.0 ** -decades
            shown = ax.imshow(torch.where(h >= floor, h, torch.nan).numpy(),
                              cmap=style.CMAPS["heat"], alpha=0.6,
                              norm=LogNorm(vmin=floor, vmax=1.0),
                              interpolation="nearest")
        else:
            shown = ax.imshow(h.numpy(), cmap=style.CMAPS["heat"], alpha=0.6, vmin=0, vmax=1,
                              interpolation="nearest")
        if colorbar:
            style.colorbar(shown, ax=ax, label="effective field, share of its peak")
    if mask is not None:
        m = _finite_tensor(mask, "mask").squeeze()
        if m.shape != image.shape:
            raise ValueError(f"mask is {tuple(m.shape)} but the image {tuple(image.shape)}: "
                             f"pass the receptive field computed for this image's size")
        ax.contour(m.numpy(), levels=[0.5], colors=style.MARKS["field"], linewidths=1.5)
    if position is not None:
        ax.plot(position[1], position[0], marker="+", color=style.MARKS["pixel"], markersize=12,
                mew=2)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


# The model of the last curve plot_history drew on each axes: an unlabelled curve drawn right
# after it (the next seed of the same model, in a loop) keeps its colour.
_LAST_MODEL: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def plot_history(history, ax=None, label: str | None = None, window: int = 25, logy: bool = True,
                 model: str | None = None):
    """Loss curve of a :class:`~unet_edu.train.History`: raw (faint) and smoothed.

    The colour and line style are those of the model's family (:func:`unet_edu.style.model_style`)
    named by ``model``, or by ``label`` when ``model`` is left out; every seed of one model is
    drawn in the same colour.  ``label`` goes into the legend once per axes, however many seeds
    carry it.  A curve with neither (``label=None`` for the later seeds of a loop) continues the
    model of the previous curve on the same axes.
    """
    steps, losses = list(getattr(history, "steps", [])), list(getattr(history, "losses", []))
    if not losses or len(steps) != len(losses):
        raise ValueError(f"history must hold one loss per step, got {len(steps)} steps and "
                         f"{len(losses)} losses: pass the History that fit() returned")
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a whole number of steps, at least 1, got {window!r}")
    ax = _ax(ax, figsize=(style.COLUMN_INCHES, 3.5))
    name = model or label or _LAST_MODEL.get(ax)
    if name:
        look = style.model_style(name)
        color, linestyle = look.color, look.linestyle
        _LAST_MODEL[ax] = name
    else:
        color, linestyle = ax._get_lines.get_next_color(), "-"
    ax.plot(steps, losses, color=color, alpha=0.25, lw=0.8, label="_nolegend_")
    shown = {line.get_label() for line in ax.get_lines()}
    ax.plot(steps, history.smoothed(min(window, len(losses))), color=color, linestyle=linestyle,
            label=label if label and label not in shown else "_nolegend_")
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
    end.  Outside a notebook it only records.  ``history`` holds what was recorded; ``model``
    names the model, for its family's colour.
    """

    def __init__(self, every: int = 50, total: int | None = None, window: int = 25,
                 title: str = "training loss", figsize=(7.5, 3), model: str | None = None):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a whole number of steps, at least 1, got {every!r}")
        from .train import History

        self.history = History()
        self.every, self.total, self.window, self.title, self.figsize = every, total, window, title, figsize
        self.model = model
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
        fig = Figure(figsize=self.figsize, layout="constrained")
        ax = fig.add_subplot()
        plot_history(self.history, ax=ax, window=min(self.window, len(self.history.steps)),
                     model=self.model)
        ax.set_title(f"{self.title}: step {self.history.steps[-1]:,}"
                     + (f" of {self.total:,}" if self.total else ""))
        data, meta = style.figure_png(fig)
        frame = Image(data=data, width=meta["width"])
        if self._handle is None:
            self._handle = display(frame, display_id=True)
        else:
            self._handle.update(frame)


def figure_to_png(fig, dpi: int = 80, colors: int | None = 256) -> bytes:
    """Render a matplotlib figure to PNG bytes (for image widgets) and close it.

    ``colors`` reduces the picture to a palette of that many colours (no dithering), which
    makes a plot's PNG about a third as large; ``None`` keeps full colour.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    if colors:
        from PIL import Image

        pic = Image.open(io.BytesIO(data)).convert("RGB").quantize(
            colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        buf = io.BytesIO()
        pic.save(buf, format="png", optimize=True)
        data = buf.getvalue()
    return data


def image_to_png(img: torch.Tensor, value_range=(0.0, 1.0), scale: int = 4, cmap: str = "gray") -> bytes:
    """A single-channel ``(H, W)`` tensor as PNG bytes, enlarged ``scale`` times (no smoothing)."""
    img = torch.as_tensor(img).detach().float().cpu().squeeze()
    lo, hi = value_range
    img = ((img - lo) / (hi - lo)).clamp(0, 1)
    img = img.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    buf = io.BytesIO()
    plt.imsave(buf, img.numpy(), cmap=cmap, vmin=0, vmax=1, format="png")
    return buf.getvalue()
