"""FeatureMapExplorer: look at what each layer of a network computes.

Pick a model, an input image and a layer; the explorer shows that layer's feature maps as a
grid, with the layer's shape and the receptive field of its centre pixel (computed exactly with
:func:`unet_edu.receptive_field.exact_receptive_field`, not looked up).

The data path is plain functions that tests call:

* :func:`layer_names` and :func:`layer_maps` — the named intermediate maps of a
  :class:`~unet_edu.models.NaiveCNN` (``conv1`` ... after each ReLU, ``out``) or a
  :class:`~unet_edu.models.UNet2015` (``enc{i}``, ``bottleneck``, ``up{i}``, ``skip{i}``,
  ``dec{i}``, ``out``, from :meth:`UNet2015.feature_maps`);
* :func:`layer_receptive_field` — the side of the receptive field of a layer's centre pixel;
* :func:`render_maps` — one layer's maps as PNG bytes (each channel scaled to its own range);
* :func:`compute_frames` — every (model, image, layer) frame in advance.

The widget then puts the frames into nested stacks linked to the controls in the browser
(:func:`unet_edu.widgets.linked_stack`): one page per model (its own layer list), inside it one
page per layer, inside that one frame per image.  So it responds on the static website too.
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as W
import torch
from torch import nn
from torchvision.utils import make_grid

from ..models import NaiveCNN, UNet2015
from ..receptive_field import exact_receptive_field, rf_extent
from ..runtime import eval_mode
from .frames import compact_png, frame_image, frame_style, html_style, linked_stack

GRID_COLUMNS = 4  # feature maps per row of a frame
BOX_WIDTH = 480  # CSS pixels of a frame's box (twice the 240 of the first edition)

__all__ = [
    "layer_names",
    "layer_maps",
    "layer_receptive_field",
    "render_maps",
    "Frame",
    "compute_frames",
    "FeatureMapExplorer",
]


def _naive_maps(model: NaiveCNN, x: torch.Tensor) -> dict[str, torch.Tensor]:
    maps, h, k = {}, x, 0
    layers = list(model.layers)
    for i, layer in enumerate(layers):
        h = layer(h)
        last = i == len(layers) - 1
        # after the activation (an Identity in a linear copy)
        if not isinstance(layer, nn.Conv2d) or last:
            k += 1
            maps["out" if last else f"conv{k}"] = h
    return maps


def layer_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every named intermediate map of ``model`` for the batch ``x``, in computation order."""
    if isinstance(model, UNet2015):
        return model.feature_maps(x)
    if isinstance(model, NaiveCNN):
        # ReLU(inplace=True) overwrites its input, so each map is read right after its ReLU.
        return {k: v.clone() for k, v in _naive_maps(model, x).items()}
    raise TypeError(f"FeatureMapExplorer knows NaiveCNN and UNet2015, got {type(model).__name__}")


def layer_names(model: nn.Module, input_shape=(1, 32, 32)) -> list[str]:
    """The layer names :func:`layer_maps` returns for ``model`` (found on the meta device)."""
    c = model.config["in_channels"]
    size = _probe_size(model, max(input_shape[-1], 32))
    with torch.no_grad():
        return list(layer_maps(model, torch.zeros(1, c, size, size, device=_device(model))))


def _device(model):
    return next(model.parameters()).device


def _probe_size(model, n: int) -> int:
    """An input side near ``n`` (at least ``n``) that ``model`` accepts."""
    if isinstance(model, UNet2015):
        m = n
        while model.output_size(m) is None:
            m += 1
        return m
    return n


def _narrow_twin(model: nn.Module) -> nn.Module:
    """A one-channel copy of the architecture: same receptive fields, far less arithmetic."""
    cfg = model.config
    if isinstance(model, UNet2015):
        return UNet2015(1, 1, (1,) * len(cfg["features"]), cfg["padding"], cfg["skip"])
    return NaiveCNN(1, hidden=1, depth=cfg["depth"])


_RF_CACHE: dict[tuple, int] = {}


def layer_receptive_field(model: nn.Module, name: str, size: int = 64) -> int:
    """Side of the receptive field of the centre pixel of layer ``name`` (in input pixels).

    Computed exactly on a linear, positive-weight copy of the network (see
    :func:`~unet_edu.receptive_field.exact_receptive_field`).  The field does not depend on the
    weights or the channel widths, so a one-channel twin of the architecture is used, and the
    input (side ``size`` to start with) is doubled until the field no longer touches its border.
    """
    key = (type(model).__name__, repr(sorted(model.config.items())), name)
    if key in _RF_CACHE:
        return _RF_CACHE[key]
    twin = _narrow_twin(model)
    while True:
        side = _probe_size(twin, size)
        with torch.no_grad():
            shape = layer_maps(twin, torch.zeros(1, 1, side, side))[name].shape
        centre = (shape[-2] // 2, shape[-1] // 2)
        mask = exact_receptive_field(twin, (1, side, side), centre,
                                     forward=lambda m, x: layer_maps(m, x)[name])
        touches = bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
        if not touches or size >= 4096:
            break
        size *= 2
    _RF_CACHE[key] = max(rf_extent(mask))
    return _RF_CACHE[key]


def render_maps(fmap: torch.Tensor, max_maps: int = 12, width: int = 240) -> bytes:
    """PNG bytes of the first ``max_maps`` channels of ``fmap`` ``(C, H, W)`` as a grid.

    Each channel is scaled to its own range (viridis colours, stored as a palette PNG: one byte
    per pixel).  A grid wider than ``width`` pixels is shrunk to ``width`` by area averaging (the
    frames stay small); a narrower one is kept at its own resolution, for the browser to enlarge
    without smoothing (see :func:`~unet_edu.widgets.frames.frame_style`).
    """
    fmap = fmap.detach().float().cpu()
    if fmap.dim() == 4:
        fmap = fmap[0]
    maps = fmap[:max_maps]
    lo = maps.amin(dim=(1, 2), keepdim=True)
    hi = maps.amax(dim=(1, 2), keepdim=True)
    maps = ((maps - lo) / (hi - lo + 1e-8)).unsqueeze(1)
    nrow = min(len(maps), GRID_COLUMNS)
    grid = make_grid(maps, nrow=nrow, padding=1, pad_value=1.0)[0]
    if grid.shape[-1] > width:  # large maps: shrink (area average) so the frame stays small
        h = max(1, round(grid.shape[-2] * width / grid.shape[-1]))
        grid = torch.nn.functional.interpolate(grid[None, None], size=(h, width), mode="area")[0, 0]
    # 64 colours: smaller than 256, and no banding the eye can see
    return compact_png(grid, (0.0, 1.0), cmap="viridis", levels=64)


@dataclass
class Frame:
    """One precomputed view: the PNG of a layer's maps for one image, and the layer's facts."""

    png: bytes
    shape: tuple[int, ...]
    receptive_field: int


def compute_frames(models: dict, images: torch.Tensor, layers: dict | None = None,
                   max_maps: int = 12,
                   width: int = 240) -> dict[tuple[str, int, str], Frame]:
    """Every frame of the explorer, keyed by ``(model name, image index, layer name)``.

    ``images`` is ``(N, C, H, W)``.  ``layers`` optionally maps a model name to the layer names
    to show (default: all of :func:`layer_names`).  Receptive fields are computed once per layer.
    """
    frames = {}
    for mname, model in models.items():
        with eval_mode(model), torch.no_grad():
            maps = layer_maps(model, images.to(_device(model)))
        chosen = (layers or {}).get(mname) or list(maps)
        unknown = [n for n in chosen if n not in maps]
        if unknown:
            raise ValueError(f"{mname} has no layer(s) {unknown}; its layers are {list(maps)}")
        for lname in chosen:
            rf = layer_receptive_field(model, lname)
            for i in range(len(images)):
                fmap = maps[lname][i]
                frames[(mname, i, lname)] = Frame(render_maps(fmap, max_maps, width),
                                                  tuple(fmap.shape), rf)
    return frames


_DESCRIPTIONS = {
    "enc": "encoder level {}",
    "bottleneck": "bottleneck",
    "up": "up-convolution into level {}",
    "skip": "skip tensor of level {} (encoder map as joined)",
    "dec": "decoder level {}",
    "conv": "after convolution {} (and ReLU)",
    "out": "output",
}


def describe(name: str) -> str:
    """A readable label for a layer name, e.g. ``dec1`` -> ``decoder level 1``."""
    for prefix, text in _DESCRIPTIONS.items():
        if name.startswith(prefix):
            rest = name[len(prefix):]
            return text.format(rest) if "{}" in text else text
    return name


class FeatureMapExplorer:
    """An explorer of feature maps: model x image x layer, precomputed and linked in the browser.

    Parameters
    ----------
    models:
        ``{"name": model}`` with :class:`~unet_edu.models.NaiveCNN` or
        :class:`~unet_edu.models.UNet2015` models (trained or not).
    images:
        ``(N, C, H, W)`` inputs, a few of them (each adds one frame per layer and model).
    image_names:
        Labels for the image control (default ``image 0`` ...).
    layers:
        Optional ``{"model name": [layer names]}`` to show only some layers.
    max_maps:
        Channels shown per layer (the first ones).

    Display it by leaving it as the last expression of a cell, or use ``.widget``.
    """

    def __init__(self, models: dict, images: torch.Tensor, image_names=None,
                 layers: dict | None = None,
                 max_maps: int = 12, width: int = 240):
        if not models:
            raise ValueError("FeatureMapExplorer needs at least one model")
        if images.dim() != 4:
            raise ValueError(f"images must be a batch (N, C, H, W), got shape "
                             f"{tuple(images.shape)}")
        if len(images) == 0:
            raise ValueError("images is an empty batch (0, C, H, W): pass at least one image, "
                             "e.g. x_test[:3]")
        self.models = dict(models)
        self.images = images.detach().cpu()
        self.image_names = list(image_names or [f"image {i}" for i in range(len(images))])
        if len(self.image_names) != len(images):
            raise ValueError(f"{len(self.image_names)} image names for {len(images)} images")
        self._max = max_maps
        self.frames = compute_frames(self.models, self.images, layers, max_maps, width)
        self._widget = None

    def layers_of(self, model_name: str) -> list[str]:
        """The layers shown for ``model_name``, in computation order."""
        seen = []
        for m, _, layer in self.frames:
            if m == model_name and layer not in seen:
                seen.append(layer)
        return seen

    def _build(self) -> W.Widget:
        names = list(self.models)
        wide = W.Layout(width="100%", max_width="420px")
        model_dd = W.Dropdown(options=names, value=names[0], description="model", layout=wide)
        image_dd = W.Dropdown(options=self.image_names, value=self.image_names[0],
                              description="input", layout=wide)
        lo, hi = float(self.images.min()), float(self.images.max())
        hi = hi if hi > lo else lo + 1.0  # a blank batch is drawn flat, not refused
        shared = W.Layout()  # one layout for every picture: a smaller saved page
        fill = W.Layout(width="100%")  # one for every stack: it spans the column
        inputs = [frame_image(compact_png(img[0], (lo, hi)), "unet-edu-fm-input", shared)
                  for img in self.images]
        input_view = linked_stack(inputs, image_dd, "index", W.Layout(width="100%"))
        input_view.add_class("unet-edu-fm-input")
        # Every frame gets the same box, sized for the tallest grid: no jump between layers.
        rows = max(-(-min(f.shape[0], self._max) // GRID_COLUMNS) for f in self.frames.values())
        side = self.images.shape[-1]
        input_width = min(320, max(192, 2 * side))  # twice the first edition's 96 px (or 1:1)
        columns = min(GRID_COLUMNS, self._max)
        box_height = round(BOX_WIDTH * rows / columns * self.images.shape[-2] / side)
        # Tall enough for the longest caption (four lines in the 480 px box): no jump between models.
        info_layout = W.Layout(min_height="6.4em")
        style = html_style()
        pages = []
        for mname in names:
            layer_list = self.layers_of(mname)
            layer_dd = W.Dropdown(options=[(f"{l} — {describe(l)}", l) for l in layer_list],
                                  value=layer_list[0], description="layer", layout=wide)
            per_layer = []
            for lname in layer_list:
                f0 = self.frames[(mname, 0, lname)]
                info = W.HTML(
                    f"<b>{lname}</b> ({describe(lname)}): shape {tuple(f0.shape)} "
                    f"(channels x height x width), receptive field of the centre pixel "
                    f"{f0.receptive_field} x {f0.receptive_field} input pixels"
                    + (f"; showing the first {min(f0.shape[0], self._max)} channels"
                       if f0.shape[0] > self._max else ""),
                    layout=info_layout, style=style,
                )
                imgs = [frame_image(self.frames[(mname, i, lname)].png, "unet-edu-fm-frame", shared)
                        for i in range(len(self.images))]
                shown = linked_stack(imgs, image_dd, "index", fill)
                per_layer.append(W.VBox([info, shown], layout=fill))
            pages.append(W.VBox([layer_dd, linked_stack(per_layer, layer_dd, "index", fill)],
                                layout=fill))
        # Beside the input where the column is wide enough, below it on a phone.
        body = linked_stack(pages, model_dd, "index",
                            W.Layout(flex="1 1 300px", min_width="0", max_width=f"{BOX_WIDTH}px"))
        row = W.Layout(flex_flow="row wrap", align_items="flex-start", width="100%")
        return W.VBox([model_dd, image_dd, W.HBox([input_view, body], layout=row),
                       frame_style("unet-edu-fm-frame", BOX_WIDTH, box_height),
                       frame_style("unet-edu-fm-input", input_width, input_width)])

    @property
    def widget(self) -> W.Widget:
        """The widget (built once)."""
        if self._widget is None:
            self._widget = self._build()
        return self._widget

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
