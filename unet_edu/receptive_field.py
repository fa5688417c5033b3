"""Receptive fields: which input pixels can influence an output pixel, and which ones do.

Three tools, from the textbook formula to measurement:

* :func:`layer_table` runs the classic recurrence along a *chain* of layers: with ``j`` the
  jump (distance in input pixels between neighbouring positions of a layer) and ``r`` the
  receptive-field size, a layer of kernel ``k`` and stride ``s`` gives
  ``r <- r + (k - 1) * j`` and ``j <- j * s``.  Five 3x3 convolutions: 1 + 5*2 = 11.
* :func:`exact_receptive_field` answers the question for *any* convolutional network, skips
  and transposed convolutions included, where no single chain tells the whole story.  It
  makes a linear copy of the network with strictly positive weights (ReLU/SiLU -> identity,
  max-pool -> average-pool, normalisation -> identity) and back-propagates from the chosen
  output pixels: with nothing negative left to cancel, the gradient is non-zero exactly on
  the pixels that are connected to the output by some path of convolutions, pools and
  attention.  "Exact" means exactly that: *what the layers that move information across
  positions reach*.  A normalisation that averages over a whole feature map (GroupNorm,
  InstanceNorm, LayerNorm over positions) couples every pixel of that map to every other,
  so a network that keeps it has a non-zero gradient from pixels beyond this field;
  :func:`without_normalization` removes it, to measure what it couples.
* :func:`effective_receptive_field` measures how much each input pixel *actually* moves the
  output, as the gradient magnitude of the real network (Luo et al., 2016).  It is usually
  a Gaussian-like blob much smaller than the theoretical field.
  :func:`effective_receptive_fields` gives one such map per group of inputs (one backward
  pass for all of them), so a measurement comes with its spread over inputs.

Measuring an effective field needs room: on an image smaller than about twice the
theoretical field the square that holds 95% of the field is cut by the image border, and
what is read is the image's size, not the network's.  :func:`on_canvas` sets images into a
larger canvas; :func:`erf_box` gives the box's real extent and says whether the border cut
it.

The linear copy is cheap for the small networks of this book.  For a wide one, note that the
support does not depend on channel widths, so a narrow twin (e.g. ``UNet2015(features=(1, 1,
1, 1, 1), padding="valid")``) gives the same answer far faster.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from .runtime import eval_mode

__all__ = [
    "LayerSpec",
    "layer_table",
    "chain_layers",
    "linearized_copy",
    "without_normalization",
    "exact_receptive_field",
    "rf_extent",
    "on_canvas",
    "effective_receptive_field",
    "effective_receptive_fields",
    "erf_extent",
    "ERFBox",
    "erf_box",
    "erf_std",
]


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a chain: its name, kernel, stride, dilation, and whether it upsamples."""

    name: str
    kernel: int
    stride: int = 1
    dilation: int = 1
    transposed: bool = False


def _first(v):
    return v[0] if isinstance(v, (tuple, list)) else v


def chain_layers(model: nn.Module) -> list[LayerSpec]:
    """The convolution and pooling layers of ``model`` in definition order, as :class:`LayerSpec`.

    Exact for a plain chain such as :class:`~unet_edu.models.NaiveCNN`; for a U-Net it lists
    every layer once, which is *not* one path — build the path you mean by hand instead.
    """
    specs = []
    for name, m in model.named_modules():
        if isinstance(m, nn.ConvTranspose2d):
            specs.append(LayerSpec(name, _first(m.kernel_size), _first(m.stride), _first(m.dilation), True))
        elif isinstance(m, nn.Conv2d):
            specs.append(LayerSpec(name, _first(m.kernel_size), _first(m.stride), _first(m.dilation)))
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            specs.append(LayerSpec(name, _first(m.kernel_size), _first(m.stride or m.kernel_size)))
    return specs


def layer_table(layers) -> list[dict]:
    """Run the receptive-field recurrence along a chain of layers.

    ``layers`` is a model (its :func:`chain_layers`) or a list of
    :class:`LayerSpec` or ``(name, kernel, stride)`` tuples.  One row per
    layer: ``kernel``, ``stride``, ``jump`` (input pixels between
    neighbouring outputs) and ``rf`` (the field's side after the layer).
    A transposed convolution of stride ``s`` divides the jump by ``s`` and
    adds ``ceil(k / s) - 1`` of its input positions (none for the U-Net's
    2 x 2 of stride 2).
    """
    if isinstance(layers, nn.Module):
        layers = chain_layers(layers)
    rows, rf, jump = [], 1.0, 1.0
    for spec in layers:
        if not isinstance(spec, LayerSpec):
            spec = LayerSpec(*spec)
        k_eff = spec.dilation * (spec.kernel - 1) + 1
        if spec.transposed:
            rf += (math.ceil(k_eff / spec.stride) - 1) * jump
            jump /= spec.stride
        else:
            rf += (k_eff - 1) * jump
            jump *= spec.stride
        rows.append(dict(layer=spec.name, kernel=spec.kernel,
                         stride=spec.stride, transposed=spec.transposed,
                         jump=jump, rf=int(round(rf))))
    return rows


# --------------------------------------------------------------------------------------------
# Exact (theoretical) receptive field by gradient support
# --------------------------------------------------------------------------------------------
_ACTIVATIONS = (nn.ReLU, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Dropout)
_NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)


def _replace(parent: nn.Module, rule) -> None:
    """Replace, recursively, every child for which ``rule(child)`` returns a module."""
    for name, child in parent.named_children():
        new = rule(child)
        if new is not None:
            setattr(parent, name, new)
        else:
            _replace(child, rule)


def linearized_copy(model: nn.Module, keep_norm: bool = False) -> nn.Module:
    """A float64 copy of ``model`` that is linear and has only positive weights.

    Weights become ``1 / fan_in`` (so values stay near 1 at any depth), biases 0; activations and
    dropout become identities, max-pools become average-pools of the same geometry, and
    normalisation layers become identities unless ``keep_norm`` (GroupNorm mixes a whole
    feature map, so with it every pixel sees every other).  Functional non-linearities inside
    a block's ``forward`` (e.g. ``F.silu``) are not replaced; they are harmless because their
    gradient is non-zero almost everywhere.
    """
    twin = copy.deepcopy(model).double().eval()

    def rule(child):
        if isinstance(child, _ACTIVATIONS) or (isinstance(child, _NORMS) and not keep_norm):
            return nn.Identity()
        if isinstance(child, nn.MaxPool2d):
            return nn.AvgPool2d(child.kernel_size, child.stride, child.padding)
        return None

    _replace(twin, rule)
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                fan_in = m.weight[0].numel() if not isinstance(m, nn.ConvTranspose2d) else (
                    m.weight.shape[0] * m.weight[0, 0].numel())
                m.weight.fill_(1.0 / fan_in)
                if m.bias is not None:
                    m.bias.zero_()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def without_normalization(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose normalisation layers are identities.

    Every other weight is kept, so the copy computes what the model
    computes except that no BatchNorm, GroupNorm, InstanceNorm or
    LayerNorm rescales its features.  The intervention that tells what
    the convolutions do from what normalisation adds: a GroupNorm averages
    over a whole feature map, so it joins every pixel to every other,
    however far apart.  (A LayerNorm inside a transformer block, which
    normalises each position on its own, is removed too.)
    """
    twin = copy.deepcopy(model)
    _replace(twin, lambda child: (nn.Identity()
                                  if isinstance(child, _NORMS) else None))
    return twin


def exact_receptive_field(model: nn.Module, input_shape, positions, *,
                          forward=None, linearize: bool = True,
                          batch_size: int = 64) -> torch.Tensor:
    """Exact receptive field of each output position, as bool masks.

    ``input_shape`` is ``(C, H, W)``; ``positions`` one ``(row, col)``
    of the output map or a list of them.  Returns a bool tensor
    ``(len(positions), H, W)`` (``(H, W)`` for one position): the input
    pixels joined to the output pixel by some path of the network's
    layers, with normalisations read as identities.  ``forward(model, x)``
    overrides how the model is called, e.g. to pass a timestep.
    """
    single = isinstance(positions[0], int)
    positions = [positions] if single else list(positions)
    net = linearized_copy(model) if linearize else model
    call = forward or (lambda m, x: m(x))
    masks = []
    for start in range(0, len(positions), batch_size):
        chunk = positions[start : start + batch_size]
        x = torch.ones(len(chunk), *input_shape, dtype=torch.float64,
                       requires_grad=True)
        out = call(net, x)
        rows = torch.tensor([p[0] for p in chunk])
        cols = torch.tensor([p[1] for p in chunk])
        h, w = out.shape[-2:]
        if not ((0 <= rows) & (rows < h) & (0 <= cols) & (cols < w)).all():
            raise ValueError(f"positions must lie inside the output map of "
                             f"size {(h, w)}, got {chunk}")
        picked = out[torch.arange(len(chunk)), :, rows, cols].sum()
        (grad,) = torch.autograd.grad(picked, x)
        masks.append(grad.abs().sum(1) > 0)
    result = torch.cat(masks)
    return result[0] if single else result


def rf_extent(mask: torch.Tensor) -> tuple[int, int]:
    """Height and width of the bounding box of a receptive-field mask."""
    rows = torch.nonzero(mask.any(1)).flatten()
    cols = torch.nonzero(mask.any(0)).flatten()
    if len(rows) == 0:
        return 0, 0
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


# --------------------------------------------------------------------------------------------
# Effective receptive field (Luo et al., 2016)
# --------------------------------------------------------------------------------------------
def on_canvas(images: torch.Tensor, side: int, background=None):
    """Set ``(N, C, h, w)`` images at the centre of square canvases.

    The canvases are zeros unless ``background`` ``(N, C, side, side)``
    is given (e.g. fresh noise of the strength the images carry).
    Returns ``(canvases, (top, left))``: image pixel ``(r, c)`` lands on
    canvas pixel ``(top + r, left + c)``.  An effective field measured on
    the image alone is cut by its border; on a canvas twice the
    theoretical field the border is out of reach.
    """
    if images.dim() != 4:
        raise ValueError(f"on_canvas places a batch (N, C, h, w), got "
                         f"shape {tuple(images.shape)}; add the missing "
                         f"axes, e.g. images[None]")
    n, c, h, w = images.shape
    if side < max(h, w):
        raise ValueError(f"a canvas of side {side} cannot hold images of "
                         f"{h} x {w}; use a side of at least {max(h, w)}")
    if background is None:
        canvas = images.new_zeros(n, c, side, side)
    else:
        if tuple(background.shape) != (n, c, side, side):
            want = (n, c, side, side)
            raise ValueError(f"background must have shape {want}, one "
                             f"canvas per image, got "
                             f"{tuple(background.shape)}")
        canvas = background.clone().to(images.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[:, :, top:top + h, left:left + w] = images
    return canvas, (top, left)


def effective_receptive_fields(model: nn.Module, x: torch.Tensor, position,
                               *, group: int = 1,
                               forward=None) -> torch.Tensor:
    """One effective field per group of ``group`` consecutive inputs.

    ``|d out[position] / d x|`` summed over channels and over the inputs
    of each group, normalised to sum 1 per group: ``(len(x) // group, H,
    W)``, float64 on the CPU, from one backward pass (each output depends
    on its own input only, in eval mode).  Group ``g`` of inputs is what
    :func:`effective_receptive_field` would measure on ``x[g * group :
    (g + 1) * group]``: a measurement together with its spread over
    inputs.  A group whose gradient is zero everywhere (every path dead)
    is refused.
    """
    if len(x) % group:
        raise ValueError(f"{len(x)} inputs do not split into groups of "
                         f"{group}; pass a multiple of {group} inputs")
    x = x.detach().clone().requires_grad_(True)
    with eval_mode(model):
        out = (forward or (lambda m, inp: m(inp)))(model, x)
    r, c = position
    (grad,) = torch.autograd.grad(out[:, :, r, c].sum(), x)
    g = grad.abs().sum(1).double().cpu()
    g = g.view(len(x) // group, group, *g.shape[-2:]).sum(1)
    total = g.sum((1, 2))
    dead = torch.nonzero(total == 0).flatten().tolist()
    if dead:
        raise ValueError(f"no gradient reaches the input from output pixel "
                         f"{tuple(position)} for group(s) {dead}: every "
                         f"path is dead there; use larger groups or "
                         f"another pixel")
    return g / total[:, None, None]


def effective_receptive_field(model: nn.Module, x: torch.Tensor, position,
                              *, forward=None) -> torch.Tensor:
    """``|d out[position] / d x|`` summed over channels and batch.

    Normalised to sum 1.  ``x`` is a batch of inputs (noise for an
    untrained model, real images for a trained one); averaging over the
    batch smooths the map.  Returns an ``(H, W)`` float tensor on the CPU
    (NaN everywhere if no gradient reaches the input).  The model is put
    in eval mode for the measurement and restored afterwards.
    """
    x = x.detach().clone().requires_grad_(True)
    with eval_mode(model):
        out = (forward or (lambda m, inp: m(inp)))(model, x)
    r, c = position
    (grad,) = torch.autograd.grad(out[:, :, r, c].sum(), x)
    g = grad.abs().sum(dim=(0, 1)).double()
    return (g / g.sum()).float().cpu()


@dataclass(frozen=True)
class ERFBox:
    """The square holding a share of an effective field (:func:`erf_box`).

    ``side`` is the nominal side of the square, centred on the field's
    centre of mass.  ``top``, ``left``, ``height`` and ``width`` give its
    real extent: the part of it that lies inside the image and within the
    rows and columns the field reaches at all (rows and columns of zero
    gradient hold none of the field).  ``clipped`` says the image border
    cut the square: then ``side`` is a size the image cannot show, and
    ``height x width`` is what was measured.
    """

    side: int
    top: int
    left: int
    height: int
    width: int
    clipped: bool


def _checked_map(erf: torch.Tensor) -> torch.Tensor:
    erf = torch.as_tensor(erf).detach().double().cpu()
    if erf.dim() != 2:
        raise ValueError(f"an effective field is one (H, W) map, got shape "
                         f"{tuple(erf.shape)}; pick one, e.g. maps[0]")
    if not bool(torch.isfinite(erf).all()) or float(erf.sum()) <= 0:
        raise ValueError("this effective field holds no gradient (all zero, "
                         "or NaN after normalising zero): no input pixel "
                         "moves that output; measure it on other inputs")
    return erf


def erf_box(erf: torch.Tensor, mass: float = 0.95) -> ERFBox:
    """The smallest square holding ``mass`` of ``erf``, and its real extent.

    The square is centred on the map's centre of mass and grows one pixel
    per side at a time.  At a border its nominal side claims pixels the
    image does not have, so :class:`ERFBox` also reports the box the
    field really occupies: the square cut to the image and to the rows
    and columns where the field is non-zero.
    """
    erf = _checked_map(erf)
    h, w = erf.shape
    total = float(erf.sum())
    rows, cols = erf.sum(1), erf.sum(0)
    r = int(round(float((rows * torch.arange(h)).sum()) / total))
    c = int(round(float((cols * torch.arange(w)).sum()) / total))
    for half in range(max(h, w)):
        top, left = max(0, r - half), max(0, c - half)
        bottom, right = min(h, r + half + 1), min(w, c + half + 1)
        if float(erf[top:bottom, left:right].sum()) >= mass * total - 1e-12:
            break
    clipped = r - half < 0 or c - half < 0 or r + half >= h or c + half >= w
    # keep only the rows and columns that hold some of the field
    on_r = torch.nonzero(rows[top:bottom] > 0).flatten()
    on_c = torch.nonzero(cols[left:right] > 0).flatten()
    top, bottom = top + int(on_r[0]), top + int(on_r[-1]) + 1
    left, right = left + int(on_c[0]), left + int(on_c[-1]) + 1
    return ERFBox(2 * half + 1, top, left, bottom - top, right - left,
                  clipped)


def erf_extent(erf: torch.Tensor, mass: float = 0.95) -> int:
    """Side of the smallest square, centred on the map's centre of mass, holding ``mass`` of it.

    The nominal side: where the image border cuts the square, this is
    larger than what the image holds (:func:`erf_box` gives both).
    """
    return erf_box(erf, mass).side


def erf_std(erf: torch.Tensor) -> float:
    """Spatial standard deviation of an effective receptive field, in pixels.

    The map is treated as a probability distribution over the pixels; the result is the root
    mean square of its row and column standard deviations.  For a Gaussian-shaped field this is
    the Gaussian's standard deviation, the spread that Luo et al. (2016) show grows like the
    square root of the depth of a plain convolutional stack.
    """
    h, w = erf.shape
    p = erf.double().abs()
    p = p / p.sum()
    rows, cols = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
    pr, pc = p.sum(1), p.sum(0)
    var_r = float((pr * rows**2).sum() - (pr * rows).sum() ** 2)
    var_c = float((pc * cols**2).sum() - (pc * cols).sum() ** 2)
    return math.sqrt(max(0.0, (var_r + var_c) / 2))
