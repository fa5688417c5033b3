"""FeatureMapExplorer: look at what each layer of a network computes.

Pick a model, an input image and a layer; the explorer shows that layer's feature maps as a
grid on one colour scale (its colour bar gives the values), beside the input -- and, when it is
given, the clean picture the noisy input was made from -- with the layer's shape and the
receptive field of its centre pixel (computed exactly with
:func:`unet_edu.receptive_field.exact_receptive_field`, not looked up).

The data path is plain functions that tests call:

* :func:`layer_names` and :func:`layer_maps` -- the named intermediate maps of a
  :class:`~unet_edu.models.NaiveCNN` (``conv1`` ... after each ReLU, ``out``) or a
  :class:`~unet_edu.models.UNet2015` (``enc{i}``, ``bottleneck``, ``up{i}``, ``skip{i}``,
  ``dec{i}``, ``out``, from :meth:`UNet2015.feature_maps`);
* :func:`layer_receptive_field` -- the side of the receptive field of a layer's centre pixel;
* :func:`render_maps` -- one layer's maps as PNG bytes, on one colour scale or each on its own;
* :func:`compute_frames` -- every (model, image, layer) frame in advance;
* :func:`describe` and :func:`short_name` -- what a layer name means, long and short.

The widget then puts the frames into nested stacks linked to the controls in the browser
(:func:`unet_edu.widgets.linked_stack`): one page per model (its own layer menu), inside it one
page per layer, inside that one frame per image.  So it responds on the static website too,
and through Python observers in a live kernel.  Inputs are checked first
(:mod:`unet_edu.widgets.inputs`): NumPy arrays and 8-bit pictures are converted, NaN pixels,
diverged models and sizes a model cannot take are refused with the fix.
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
from ..style import CMAPS
from .frames import (caption_html, colorbar_html, compact_png, frame_image, frame_style,
                     html_style, lines_height, linked_stack, state_bytes)
from .inputs import as_pictures, check_finite, check_fits, check_model_finite

GRID_COLUMNS = 4  # feature maps per row of a frame
BOX_WIDTH = 480  # CSS pixels of a frame's box (twice the 240 of the first edition)
PHONE_WIDTH = 330  # CSS pixels of text on a 390-pixel phone: captions are sized for it

__all__ = [
    "layer_names",
    "layer_maps",
    "layer_receptive_field",
    "render_maps",
    "Frame",
    "compute_frames",
    "describe",
    "short_name",
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
    raise TypeError(f"FeatureMapExplorer knows NaiveCNN and UNet2015, got {type(model).__name__}; "
                    f"pass one of those (a UNet2015 with skip='none' for a network without skips)")


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


def render_maps(fmap: torch.Tensor, max_maps: int = 12, width: int = 240,
                value_range=None) -> bytes:
    """PNG bytes of the first ``max_maps`` channels of ``fmap`` ``(C, H, W)`` as a grid.

    With ``value_range=(low, high)`` every channel is drawn on that one scale (so a colour bar
    can give the values, and a weak channel looks weak); without it each channel is scaled to
    its own range.  Colours are the book's map colours (viridis), stored as a palette PNG: one
    byte per pixel.  A grid wider than ``width`` pixels is shrunk to ``width`` by area
    averaging (the frames stay small); a narrower one is kept at its own resolution, for the
    browser to enlarge without smoothing (see :func:`~unet_edu.widgets.frames.frame_style`).
    """
    if not isinstance(max_maps, int) or max_maps < 1:
        raise ValueError(f"max_maps must be a whole number of at least 1, got {max_maps!r}")
    fmap = fmap.detach().float().cpu()
    if fmap.dim() == 4:
        fmap = fmap[0]
    maps = fmap[:max_maps]
    if value_range is None:
        lo = maps.amin(dim=(1, 2), keepdim=True)
        hi = maps.amax(dim=(1, 2), keepdim=True)
    else:
        lo, hi = (float(v) for v in value_range)
        if not hi > lo:
            raise ValueError(f"value_range must go up, got {value_range!r}")
    maps = ((maps - lo) / (hi - lo + 1e-8)).clamp(0, 1).unsqueeze(1)
    nrow = min(len(maps), GRID_COLUMNS)
    # The gaps between maps are NaN, drawn white: no colour of the scale.
    grid = make_grid(maps, nrow=nrow, padding=1, pad_value=float("nan"))[0]
    if grid.shape[-1] > width:  # large maps: shrink (area average) so the frame stays small
        h = max(1, round(grid.shape[-2] * width / grid.shape[-1]))
        grid = torch.nn.functional.interpolate(grid[None, None], size=(h, width), mode="area")[0, 0]
    # 63 colours and white: smaller than 256, and no banding the eye can see
    return compact_png(grid, (0.0, 1.0), cmap=CMAPS["map"], levels=63, nan_color="white")


@dataclass
class Frame:
    """One precomputed view: the PNG of a layer's maps for one image, and the layer's facts.

    ``value_range`` is the colour scale's ``(low, high)``, or ``None`` when each map is
    scaled to its own range.
    """

    png: bytes
    shape: tuple[int, ...]
    receptive_field: int
    value_range: tuple[float, float] | None = None


def _layer_range(maps: torch.Tensor) -> tuple[float, float]:
    lo, hi = float(maps.min()), float(maps.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)  # a constant layer is drawn flat


def compute_frames(models: dict, images: torch.Tensor, layers: dict | None = None,
                   max_maps: int = 12, width: int = 240,
                   scale: str = "layer") -> dict[tuple[str, int, str], Frame]:
    """Every frame of the explorer, keyed by ``(model name, image index, layer name)``.

    ``images`` is ``(N, C, H, W)``.  ``layers`` optionally maps a model name to the layer names
    to show (default: all of :func:`layer_names`).  ``scale="layer"`` draws all the maps of a
    layer (its first ``max_maps`` channels, for every image) on one colour scale;
    ``"channel"`` scales each map to its own range.  Receptive fields are computed once per
    layer.
    """
    if scale not in ("layer", "channel"):
        raise ValueError(f"scale must be 'layer' (one colour scale per layer) or 'channel' "
                         f"(each map its own), got {scale!r}")
    unknown_models = sorted(set(layers or {}) - set(models))
    if unknown_models:
        raise ValueError(f"layers names models {unknown_models} that are not among the models "
                         f"{list(models)}; use the same names as in models")
    frames = {}
    for mname, model in models.items():
        with eval_mode(model), torch.no_grad():
            maps = layer_maps(model, images.to(_device(model)))
        chosen = (layers or {}).get(mname) or list(maps)
        unknown = [n for n in chosen if n not in maps]
        if unknown:
            raise ValueError(f"{mname} has no layer(s) {unknown}; its layers are {list(maps)}")
        for lname in chosen:
            shown = maps[lname][:, :max_maps].float().cpu()
            check_finite(shown, f"layer {lname} of model {mname!r}", "FeatureMapExplorer")
            value_range = _layer_range(shown) if scale == "layer" else None
            rf = layer_receptive_field(model, lname)
            for i in range(len(images)):
                fmap = maps[lname][i]
                frames[(mname, i, lname)] = Frame(render_maps(fmap, max_maps, width, value_range),
                                                  tuple(fmap.shape), rf, value_range)
    return frames


_DESCRIPTIONS = {
    "enc": ("encoder level {}", "encoder, level {}"),
    "bottleneck": ("bottleneck", "bottleneck"),
    "up": ("up-convolution into level {}", "up-convolution to level {}"),
    "skip": ("skip tensor of level {} (encoder map as joined)", "skip into level {}"),
    "dec": ("decoder level {}", "decoder, level {}"),
    "conv": ("after convolution {} (and ReLU)", "convolution {} + ReLU"),
    "out": ("output", "output"),
}


def _describe(name: str, which: int) -> str:
    for prefix, texts in _DESCRIPTIONS.items():
        if name.startswith(prefix):
            rest, text = name[len(prefix):], texts[which]
            return text.format(rest) if "{}" in text else text
    return name


def describe(name: str) -> str:
    """A readable label for a layer name, e.g. ``dec1`` -> ``decoder level 1``."""
    return _describe(name, 0)


def short_name(name: str) -> str:
    """A layer's menu entry: its name and a few words, e.g. ``dec1: decoder, level 1``."""
    return f"{name}: {_describe(name, 1)}"


def _check_model_kind(name: str, model, where: str) -> None:
    if not isinstance(model, (NaiveCNN, UNet2015)):
        raise ValueError(f"{where}: model {name!r} is a {type(model).__name__}; the explorer "
                         f"reads the layers of a NaiveCNN or a UNet2015 (skip='concat', 'add' "
                         f"or 'none')")


class FeatureMapExplorer:
    """An explorer of feature maps: model x image x layer, precomputed and linked in the browser.

    Parameters
    ----------
    models:
        ``{"name": model}`` with :class:`~unet_edu.models.NaiveCNN` or
        :class:`~unet_edu.models.UNet2015` models (trained or not).
    images:
        ``(N, C, H, W)`` inputs, a few of them (each adds one frame per layer and model);
        a tensor or a NumPy array, floats or 8-bit (0..255, read as [0, 1]).
    image_names:
        Labels for the image menu (default ``image 0`` ...).
    layers:
        Optional ``{"model name": [layer names]}`` to show only some layers.
    max_maps:
        Channels shown per layer (the first ones).
    width:
        Largest width of a frame's picture, in pixels (larger grids are shrunk).
    clean:
        Optional ``(N, C, H', W')`` clean pictures the noisy ``images`` were made from, shown
        beside them (any size: a target mask, say).
    clean_label:
        What the clean pictures are called on the page.
    scale:
        ``"layer"`` (one colour scale for every map of a layer, with its values) or
        ``"channel"`` (each map stretched to its own range).

    Display it by leaving it as the last expression of a cell, or use ``.widget``.
    """

    def __init__(self, models: dict, images, image_names=None, layers: dict | None = None,
                 max_maps: int = 12, width: int = 240, *, clean=None,
                 clean_label: str = "clean", scale: str = "layer"):
        where = "FeatureMapExplorer"
        if not isinstance(models, dict) or not models:
            raise ValueError(f"{where} needs at least one model, as {{'name': model}}")
        if not isinstance(max_maps, int) or isinstance(max_maps, bool) or max_maps < 1:
            raise ValueError(f"{where}: max_maps must be a whole number of at least 1 (the "
                             f"channels shown per layer), got {max_maps!r}")
        if not isinstance(width, int) or width < 16:
            raise ValueError(f"{where}: width must be a whole number of pixels, at least 16, "
                             f"got {width!r}")
        if scale not in ("layer", "channel"):
            raise ValueError(f"{where}: scale must be 'layer' or 'channel', got {scale!r}")
        images = as_pictures(images, "images", where, 4)
        for name, model in models.items():
            _check_model_kind(name, model, where)
            check_model_finite(model, name, where)
            check_fits(model, images.shape, name, where)
        if clean is not None:
            clean = as_pictures(clean, "clean", where, 4)
            if len(clean) != len(images):
                raise ValueError(f"{where}: {len(clean)} clean pictures for {len(images)} "
                                 f"images; pass one clean picture per image, e.g. x_test[:3] "
                                 f"beside noisy_test[:3]")
        self.models = dict(models)
        self.images = images
        self.clean, self.clean_label = clean, str(clean_label)
        self.image_names = ([f"image {i}" for i in range(len(images))] if image_names is None
                            else [str(n) for n in image_names])
        if len(self.image_names) != len(images):
            raise ValueError(f"{where}: {len(self.image_names)} image names for {len(images)} "
                             f"images; give one name per image")
        self._max, self.scale = max_maps, scale
        self.frames = compute_frames(self.models, self.images, layers, max_maps, width, scale)
        self._widget = None

    def layers_of(self, model_name: str) -> list[str]:
        """The layers shown for ``model_name``, in computation order."""
        seen = []
        for m, _, layer in self.frames:
            if m == model_name and layer not in seen:
                seen.append(layer)
        return seen

    # -- the view ----------------------------------------------------------------------------
    def _input_column(self, image_dd, side: int) -> W.Widget:
        """The input (and the clean picture) with their grey scales, switched by the image menu."""
        shared = W.Layout()
        parts = []
        for title, pictures in (("input", self.images), (self.clean_label, self.clean)):
            if pictures is None:
                continue
            lo, hi = _layer_range(pictures)
            shown = [frame_image(compact_png(p[0], (lo, hi)), "unet-edu-fm-input", shared)
                     for p in pictures]
            stack = linked_stack(shown, image_dd, "index", W.Layout(width="100%"))
            stack.add_class("unet-edu-fm-input")
            bar = W.HTML(colorbar_html(CMAPS["image"], lo, hi, title, max_width=side),
                         layout=W.Layout(width="100%", margin="0px"))
            parts.append(W.VBox([stack, bar], layout=W.Layout(flex="1 1 140px", min_width="0",
                                                               max_width=f"{side}px")))
        # Beside each other on a phone (where the column spans the screen), one above the
        # other in the narrow column beside the maps on a wide screen.
        column = W.Box(parts, layout=W.Layout(flex_flow="row wrap", flex="0 1 auto",
                                              width="100%", min_width="0", grid_gap="6px"))
        column.add_class("unet-edu-fm-inputs")
        return column

    @staticmethod
    def _input_style(side: int) -> W.HTML:
        """The input column's width: ``side`` pixels beside the maps, the screen on a phone."""
        css = (f".unet-edu-fm-inputs {{ max-width: {side}px; }} @media (max-width: 600px) "
               f"{{ .unet-edu-fm-inputs {{ max-width: 100%; }} }}")
        return W.HTML(f"<style>{css}</style>", layout=W.Layout(height="0px", margin="0px"))

    def _info(self, mname: str, lname: str) -> tuple[str, str]:
        """The layer's facts and its colour scale, as HTML."""
        f0 = self.frames[(mname, 0, lname)]
        channels, h, w = (f0.shape + (1, 1))[:3]
        text = (f"<b>{lname}</b>, {describe(lname)}: {channels} maps of {h} x {w}; the centre "
                f"pixel sees {f0.receptive_field} x {f0.receptive_field} input pixels"
                + (f"; the first {self._max} maps are shown" if channels > self._max else ""))
        if f0.value_range is None:
            bar = colorbar_html(CMAPS["map"], 0.0, 1.0, "each map from its own lowest value "
                                "to its highest", BOX_WIDTH, ends=("low", "high"))
        else:
            bar = colorbar_html(CMAPS["map"], *f0.value_range, "activation (one scale for "
                                "the layer)", BOX_WIDTH)
        return text, bar

    def _build(self) -> W.Widget:
        names = list(self.models)
        wide = W.Layout(width="100%", max_width="420px")
        model_dd = W.Dropdown(options=names, index=0, description="model", layout=wide)
        image_dd = W.Dropdown(options=[(n, i) for i, n in enumerate(self.image_names)], index=0,
                              description="input", layout=wide)
        shared = W.Layout()  # one layout for every picture: a smaller saved page
        fill = W.Layout(width="100%")  # one for every stack: it spans the column
        # Every frame gets the same box, sized for the tallest grid: no jump between layers.
        rows = max(-(-min(f.shape[0], self._max) // GRID_COLUMNS) for f in self.frames.values())
        side = self.images.shape[-1]
        input_width = min(320, max(192, 2 * side))  # twice the first edition's 96 px (or 1:1)
        columns = min(GRID_COLUMNS, self._max)
        box_height = round(BOX_WIDTH * rows / columns * self.images.shape[-2] / side)
        infos = {(m, l): self._info(m, l) for m in names for l in self.layers_of(m)}
        # Tall enough for the longest caption on a phone: no jump between layers or models.
        info_layout = W.Layout(height=lines_height([t for t, _ in infos.values()], PHONE_WIDTH),
                               overflow="hidden")
        style = html_style()
        pages = []
        for mname in names:
            layer_list = self.layers_of(mname)
            layer_dd = W.Dropdown(options=[(short_name(l), l) for l in layer_list],
                                  value=layer_list[0], description="layer", layout=wide)
            per_layer = []
            for lname in layer_list:
                text, bar = infos[(mname, lname)]
                info = W.HTML(caption_html(text), layout=info_layout, style=style)
                imgs = [frame_image(self.frames[(mname, i, lname)].png, "unet-edu-fm-frame",
                                    shared) for i in range(len(self.images))]
                shown = linked_stack(imgs, image_dd, "index", fill)
                per_layer.append(W.VBox([info, shown, W.HTML(bar, style=style)], layout=fill))
            pages.append(W.VBox([layer_dd, linked_stack(per_layer, layer_dd, "index", fill)],
                                layout=fill))
        # Beside the input where the column is wide enough, below it on a phone.
        body = linked_stack(pages, model_dd, "index",
                            W.Layout(flex="1 1 300px", min_width="0", max_width=f"{BOX_WIDTH}px"))
        row = W.Layout(flex_flow="row wrap", align_items="flex-start", width="100%",
                       grid_gap="12px")
        controls = ([model_dd] if len(names) > 1 else []) + (
            [image_dd] if len(self.images) > 1 else [])
        return W.VBox(controls + [W.HBox([self._input_column(image_dd, input_width), body],
                                         layout=row),
                                  frame_style("unet-edu-fm-frame", BOX_WIDTH, box_height),
                                  frame_style("unet-edu-fm-input", input_width, input_width),
                                  self._input_style(input_width)])

    @property
    def widget(self) -> W.Widget:
        """The widget (built once)."""
        if self._widget is None:
            self._widget = self._build()
        return self._widget

    def state_bytes(self) -> int:
        """Bytes the explorer adds to a saved notebook or book page (its widget state)."""
        return state_bytes(self.widget)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
