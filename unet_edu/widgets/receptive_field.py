"""ReceptiveFieldExplorer: which input pixels can move an output pixel, and which ones do.

Pick a model and an output pixel; over the input image the explorer outlines the exact
theoretical receptive field (every pixel connected to the output by some path, computed with
:func:`unet_edu.receptive_field.exact_receptive_field`) and paints the effective one as a
heatmap (the gradient magnitude of the real network, Luo et al., 2016), with both sizes.

The data path is plain functions that tests call:

* :func:`position_grid` — ``n x n`` output pixels spread evenly over the map;
* :func:`exact_twin` — a copy of the architecture whose exact field is cheap to compute
  (one channel where the widths do not matter, no time or class input where the model has
  one: a per-channel scale and shift never changes which pixels are connected);
* :func:`default_forward` — how a model is called (a fixed timestep for a diffusion U-Net);
* :func:`rf_data` — masks, effective fields and sizes for a list of positions;
* :func:`render_frame` — one frame as a small PNG (:func:`overlay_rgb`);
* :func:`caption` — the facts of a frame, shown above it;
* :func:`compute_frames` — every (model, position) frame in advance.

The widget puts the frames into nested stacks linked to the controls in the browser
(:func:`unet_edu.widgets.linked_stack`): one page per model, in it one page per row, in that
one frame per column.  So it responds on the static website too, with no kernel, and through
Python observers in a live kernel.  The row and column sliders read out the output pixel's
own row and column.  The heat has the colours of :func:`unet_edu.viz.rf_overlay` (the book's
``inferno``, with its colour bar) and the outline and pixel its marks, so the explorer and the
chapter's figures look alike.  Inputs are checked first (:mod:`unet_edu.widgets.inputs`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import ipywidgets as W
import torch
from matplotlib import colormaps
from matplotlib.colors import to_rgb
from PIL import Image
from torch import nn

from ..models import DiffusionUNet, NaiveCNN, UNet2015
from ..receptive_field import (effective_receptive_field, erf_extent, erf_std,
                               exact_receptive_field, rf_extent)
from ..style import CMAPS, MARKS
from .frames import (caption_html, colorbar_html, frame_image, frame_style, html_style,
                     lines_height, linked_stack, state_bytes, value_slider)
from .inputs import as_pictures, check_fits, check_model_finite

HEAT_ALPHA = 0.6  # the heat's opacity over the grey image, as in viz.rf_overlay
PHONE_WIDTH = 330  # CSS pixels of text on a 390-pixel phone: captions are sized for it

__all__ = [
    "position_grid",
    "exact_twin",
    "default_forward",
    "RFData",
    "rf_data",
    "overlay_rgb",
    "render_frame",
    "caption",
    "compute_frames",
    "ReceptiveFieldExplorer",
]


def position_grid(height: int, width: int, n: int = 8) -> list[list[tuple[int, int]]]:
    """``n x n`` output positions spread evenly over a ``height x width`` map, as rows of
    ``(row, col)`` pairs; the first and last rows and columns touch the borders."""
    if n < 1 or n > min(height, width):
        raise ValueError(f"n must lie in 1..{min(height, width)} for a {height}x{width} map, "
                         f"got {n}")

    def spread(size):
        if n == 1:
            return [size // 2]
        return [round(i * (size - 1) / (n - 1)) for i in range(n)]

    return [[(r, c) for c in spread(width)] for r in spread(height)]


def exact_twin(model: nn.Module) -> nn.Module:
    """An architecture twin with the same exact receptive fields, cheaper to compute.

    :class:`~unet_edu.models.NaiveCNN` and :class:`~unet_edu.models.UNet2015` get one channel
    per layer; a :class:`~unet_edu.models.DiffusionUNet` keeps its widths (GroupNorm needs them)
    but loses its time, class and context inputs, which only scale and shift whole channels.
    Attention blocks removed from a model by hand (an emptied ``ModuleList``) stay removed.
    Any other model is returned as it is.
    """
    cfg = getattr(model, "config", None)
    if isinstance(model, NaiveCNN):
        return NaiveCNN(cfg["in_channels"], hidden=1, depth=cfg["depth"], out_channels=1)
    if isinstance(model, UNet2015):
        return UNet2015(cfg["in_channels"], 1, (1,) * len(cfg["features"]), cfg["padding"],
                        cfg["skip"])
    if isinstance(model, DiffusionUNet):
        twin = DiffusionUNet(**{**cfg, "time_conditioning": False, "num_classes": None,
                                "context_dim": None})
        _copy_removed_attention(model, twin)
        return twin
    return model


def _copy_removed_attention(model: nn.Module, twin: nn.Module) -> None:
    """Empty the twin's attention lists wherever the model's are empty."""
    ours = dict(model.named_modules())
    for name, module in list(twin.named_modules()):
        if isinstance(module, nn.ModuleList) and name in ours:
            if len(ours[name]) == 0 and len(module) > 0:
                parent_name, _, child = name.rpartition(".")
                parent = twin.get_submodule(parent_name) if parent_name else twin
                if isinstance(parent, nn.ModuleList):
                    parent[int(child)] = nn.ModuleList()
                else:
                    setattr(parent, child, nn.ModuleList())


def default_forward(t: int = 500):
    """``forward(model, x)`` for the receptive-field tools: a DiffusionUNet that needs a
    timestep gets ``t`` for every image; other models are called with ``x`` alone."""

    def forward(model, x):
        if isinstance(model, DiffusionUNet) and model.config["time_conditioning"]:
            return model(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        return model(x)

    return forward


@dataclass
class RFData:
    """Receptive fields of one output pixel.

    ``mask`` the exact field (bool ``(H, W)``), ``size`` its bounding box ``(h, w)``, ``pixels``
    how many input pixels it holds; ``erf`` the effective field (``(H, W)``, sums to 1),
    ``erf_size`` the side of the square holding 95% of it, ``erf_sigma`` its spread in pixels.
    """

    position: tuple[int, int]
    mask: torch.Tensor
    size: tuple[int, int]
    pixels: int
    erf: torch.Tensor
    erf_size: int
    erf_sigma: float


def rf_data(model: nn.Module, erf_inputs: torch.Tensor, positions, *, forward=None) -> list[RFData]:
    """Exact and effective receptive fields of ``model`` for each ``(row, col)`` in ``positions``.

    ``erf_inputs`` ``(B, C, H, W)`` is the batch the effective field is averaged over (noise
    for an untrained model, real images for a trained one); its shape also fixes the input
    shape of the exact field.  ``forward`` defaults to :func:`default_forward`.
    """
    forward = forward or default_forward()
    positions = [tuple(p) for p in positions]
    twin = exact_twin(model)
    masks = exact_receptive_field(twin, tuple(erf_inputs.shape[1:]), positions, forward=forward)
    dev = next(model.parameters()).device
    x = erf_inputs.to(dev)
    out = []
    for pos, mask in zip(positions, masks):
        erf = effective_receptive_field(model, x, pos, forward=forward)
        if not bool(torch.isfinite(erf).all()):  # no gradient at all (e.g. every ReLU dead here)
            erf, side, sigma = torch.zeros_like(erf), 0, 0.0
        else:
            # the 95% square, clipped to the image
            side = min(erf_extent(erf, 0.95), max(erf.shape))
            sigma = erf_std(erf)
        out.append(RFData(pos, mask, rf_extent(mask), int(mask.sum()), erf, side, sigma))
    return out


def overlay_rgb(image: torch.Tensor, data: RFData, scale: int = 4) -> torch.Tensor:
    """The image with the fields drawn on it, ``(H * scale, W * scale, 3)`` in [0, 1].

    The image is shown in grey with the effective field on top as heat (the book's heat
    colours at 60% opacity, as :func:`unet_edu.viz.rf_overlay` draws it), the exact field's
    border as a one-pixel cyan line (drawn on the ``scale`` times finer grid, so it runs
    between image pixels) and the chosen output pixel in green (:data:`unet_edu.style.MARKS`).
    """
    img = image.detach().float().cpu().squeeze()
    img = (img - img.min()) / (img.max() - img.min() + 1e-8)
    heat = data.erf.detach().float().cpu()
    heat = (heat / (heat.max() + 1e-12)).clamp(0, 1)
    coloured = torch.from_numpy(colormaps[CMAPS["heat"]](heat.numpy())[..., :3]).float()
    rgb = ((1 - HEAT_ALPHA) * img[..., None] + HEAT_ALPHA * coloured).clamp(0, 1)
    r, c = data.position
    rgb[r, c] = torch.tensor(to_rgb(MARKS["pixel"]))
    rgb = rgb.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    mask = data.mask.detach().cpu().bool().repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    padded = torch.nn.functional.pad(mask[None, None].float(), (1, 1, 1, 1))[0, 0].bool()
    inner = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    border = mask & ~inner  # mask pixels with a neighbour outside the field (or the image)
    rgb[border] = torch.tensor(to_rgb(MARKS["field"]))
    return rgb


def render_frame(image: torch.Tensor, data: RFData, scale: int = 4) -> bytes:
    """One frame as a small PNG (:func:`overlay_rgb`); the page enlarges it further."""
    rgb = (overlay_rgb(image, data, scale) * 255).round().to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="png", optimize=True)
    return buf.getvalue()


def caption(data: RFData, model_name: str | None = None) -> str:
    """The facts of a frame as a line of HTML."""
    h, w = data.size
    name = f"<b>{model_name}</b>, " if model_name else ""
    return (f"{name}output pixel {data.position}: exact field {h} x {w} "
            f"(cyan outline), effective field (95%) {data.erf_size} x {data.erf_size} (heat)")


def _check_erf_inputs(erf_inputs, img: torch.Tensor, where: str) -> torch.Tensor:
    batch = as_pictures(erf_inputs, "erf_inputs", where, 4)
    if tuple(batch.shape[1:]) != tuple(img.shape):
        raise ValueError(f"{where}: erf_inputs are pictures of {tuple(batch.shape[1:])} but the "
                         f"image is {tuple(img.shape)}; pass pictures of the image's size, e.g. "
                         f"noisy versions of it, or leave erf_inputs out")
    return batch


def compute_frames(models: dict, image: torch.Tensor, n: int = 8, *, erf_inputs=None, forward=None,
                   render: bool = True) -> dict[str, list[list[tuple[bytes | None, RFData]]]]:
    """For each model, an ``n x n`` grid (rows of columns) of ``(png, RFData)`` frames.

    ``image`` ``(C, H, W)`` or ``(H, W)`` is what the frames show; ``erf_inputs`` defaults to
    that image alone.  ``render=False`` skips the PNGs (``None``) for a quick look at the data.
    Tensors or NumPy arrays, floats or 8-bit pictures (read as [0, 1]); NaN pixels, models
    with NaN weights and sizes a model cannot take are refused with the fix.
    """
    where = "ReceptiveFieldExplorer"
    img = as_pictures(image, "image", where, 3)
    batch = img[None] if erf_inputs is None else _check_erf_inputs(erf_inputs, img, where)
    h, w = img.shape[-2:]
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= min(h, w):
        raise ValueError(f"{where}: n={n!r} output pixels per side do not fit a {h} x {w} image; "
                         f"use n in 1..{min(h, w)} or a larger image (the book's digits are "
                         f"28 x 28)")
    for name, model in models.items():
        check_model_finite(model, name, where)
        check_fits(model, img[None].shape, name, where, "image")
    grid = position_grid(img.shape[-2], img.shape[-1], n)
    flat = [p for row in grid for p in row]
    frames = {}
    for name, model in models.items():
        data = rf_data(model, batch, flat, forward=forward)
        cells = [(render_frame(img[0], d) if render else None, d) for d in data]
        frames[name] = [cells[i * n : (i + 1) * n] for i in range(n)]
    return frames


class ReceptiveFieldExplorer:
    """Choose a model and an output pixel; see its exact and effective receptive fields.

    ``models`` maps a display name to a model; ``image`` is the input drawn under the fields;
    ``n`` the number of rows and columns of output pixels on offer (``n * n`` frames per model,
    all computed when the explorer is built).  Display the explorer (or its ``.widget``).
    """

    def __init__(self, models: dict, image, n: int = 8, *, erf_inputs=None, forward=None):
        if not isinstance(models, dict) or not models:
            raise ValueError("ReceptiveFieldExplorer needs at least one model, as "
                             "{'name': model}")
        self.frames = compute_frames(models, image, n, erf_inputs=erf_inputs, forward=forward)
        self.names = list(models)
        self.n = n
        self.widget = self._build()

    def _build(self) -> W.Widget:
        n = self.n
        wide = W.Layout(width="100%", max_width="420px")
        model_box = W.Dropdown(options=self.names, index=0, description="model", layout=wide,
                               style={"description_width": "7.5em"})
        first = self.frames[self.names[0]]
        rows = [str(cells[0][1].position[0]) for cells in first]
        cols = [str(d.position[1]) for _, d in first[0]]
        row = value_slider("output row", rows, n // 2, wide, "7.5em")
        col = value_slider("output column", cols, n // 2, wide, "7.5em")
        shared = W.Layout()  # one layout for every picture: a smaller saved page
        fill = W.Layout(width="100%")  # one for every stack and frame: they span the column
        texts = {(name, r, c): caption(d, name) for name in self.names
                 for r, cells in enumerate(self.frames[name]) for c, (_, d) in enumerate(cells)}
        line = W.Layout(height=lines_height(texts.values(), PHONE_WIDTH), overflow="hidden")
        style = html_style()
        pages = []
        for name in self.names:
            by_row = []
            for r, cells in enumerate(self.frames[name]):
                frames = [W.VBox([W.HTML(caption_html(texts[(name, r, c)]), layout=line,
                                         style=style),
                                  frame_image(png, "unet-edu-rf-frame", shared)], layout=fill)
                          for c, (png, d) in enumerate(cells)]
                by_row.append(linked_stack(frames, col, "index", fill))
            pages.append(linked_stack(by_row, row, "index", fill))
        view = linked_stack(pages, model_box, trait="index", layout=fill)
        h, w = first[0][0][1].mask.shape
        # 336 CSS pixels for a 28-pixel image: twice the first edition's 156.
        side = 336
        legend = W.HTML(
            colorbar_html(CMAPS["heat"], 0.0, 1.0, "effective field, share of its peak (heat)",
                          side)
            + caption_html(
                f'<small><span style="color: {MARKS["field"]}; font-weight: bold">&#9633;'
                f'</span> outline: exact receptive field; <span style="color: '
                f'{MARKS["pixel"]}; font-weight: bold">&#9632;</span> the output pixel. Output '
                f"pixels on an {n} x {n} grid; every frame is computed in advance, so the "
                f"controls also work on the static page.</small>"),
            layout=W.Layout(max_width=f"{side}px"))
        controls = ([model_box] if len(self.names) > 1 else []) + [row, col]
        return W.VBox(controls + [view, legend,
                                  frame_style("unet-edu-rf-frame", side, round(side * h / w))])

    def state_bytes(self) -> int:
        """Bytes the explorer adds to a saved notebook or book page (its widget state)."""
        return state_bytes(self.widget)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
