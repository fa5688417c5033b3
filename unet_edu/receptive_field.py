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
  the pixels that are connected to the output by some path — the theoretical receptive field.
* :func:`effective_receptive_field` measures how much each input pixel *actually* moves the
  output, as the gradient magnitude of the real network (Luo et al., 2016).  It is usually
  a Gaussian-like blob much smaller than the theoretical field.

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
    "exact_receptive_field",
    "rf_extent",
    "effective_receptive_field",
    "erf_extent",
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

    ``layers`` is a model (its :func:`chain_layers` are used), or a list of :class:`LayerSpec`
    or ``(name, kernel, stride)`` tuples.  Returns one row per layer with ``kernel``,
    ``stride``, ``jump`` (input pixels between neighbouring outputs) and ``rf`` (receptive-field
    side after the layer).  A transposed convolution of stride ``s`` divides the jump by ``s``
    and adds ``ceil(k / s) - 1`` of its input positions (none for the U-Net's 2x2, stride 2).
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
        rows.append(dict(layer=spec.name, kernel=spec.kernel, stride=spec.stride,
                         transposed=spec.transposed, jump=jump, rf=int(round(rf))))
    return rows


# --------------------------------------------------------------------------------------------
# Exact (theoretical) receptive field by gradient support
# --------------------------------------------------------------------------------------------
_ACTIVATIONS = (nn.ReLU, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Dropout)
_NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)


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

    def swap(parent: nn.Module):
        for name, child in parent.named_children():
            if isinstance(child, _ACTIVATIONS) or (isinstance(child, _NORMS) and not keep_norm):
                setattr(parent, name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
            else:
                swap(child)

    swap(twin)
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


def exact_receptive_field(model: nn.Module, input_shape, positions, *, forward=None,
                          linearize: bool = True, batch_size: int = 64) -> torch.Tensor:
    """The exact receptive field of each output position, as boolean masks over the input.

    ``input_shape`` is ``(C, H, W)``; ``positions`` is one ``(row, col)`` of the output map or a
    list of them.  Returns a bool tensor ``(len(positions), H, W)``.  ``forward(model, x)``
    overrides how the model is called (default ``model(x)``), e.g. to pass a timestep.
    """
    single = isinstance(positions[0], int)
    positions = [positions] if single else list(positions)
    net = linearized_copy(model) if linearize else model
    call = forward or (lambda m, x: m(x))
    masks = []
    for start in range(0, len(positions), batch_size):
        chunk = positions[start : start + batch_size]
        x = torch.ones(len(chunk), *input_shape, dtype=torch.float64, requires_grad=True)
        out = call(net, x)
        rows = torch.tensor([p[0] for p in chunk])
        cols = torch.tensor([p[1] for p in chunk])
        if (rows >= out.shape[-2]).any() or (cols >= out.shape[-1]).any() or (rows < 0).any() or (cols < 0).any():
            raise ValueError(f"positions must lie inside the output map of size {tuple(out.shape[-2:])}")
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
def effective_receptive_field(model: nn.Module, x: torch.Tensor, position, *, forward=None) -> torch.Tensor:
    """``|d out[position] / d x|`` summed over channels and batch, normalised to sum 1.

    ``x`` is a batch of inputs (random noise for an untrained model, real images for a trained
    one); averaging over the batch smooths the map.  Returns an ``(H, W)`` float tensor on the
    CPU.  The model is put in eval mode for the measurement and restored afterwards.
    """
    x = x.detach().clone().requires_grad_(True)
    with eval_mode(model):
        out = (forward or (lambda m, inp: m(inp)))(model, x)
    r, c = position
    (grad,) = torch.autograd.grad(out[:, :, r, c].sum(), x)
    g = grad.abs().sum(dim=(0, 1)).double()
    return (g / g.sum()).float().cpu()


def erf_extent(erf: torch.Tensor, mass: float = 0.95) -> int:
    """Side of the smallest square, centred on the map's centre of mass, holding ``mass`` of it."""
    h, w = erf.shape
    total = float(erf.sum())
    r = int(round(float((erf.sum(1) * torch.arange(h)).sum()) / total))
    c = int(round(float((erf.sum(0) * torch.arange(w)).sum()) / total))
    for half in range(max(h, w)):
        box = erf[max(0, r - half) : r + half + 1, max(0, c - half) : c + half + 1]
        if float(box.sum()) >= mass * total - 1e-12:
            return 2 * half + 1
    return max(h, w)


def erf_std(erf: torch.Tensor) -> float:
    """Spatial standard deviation of an effective receptive field, in pixels.

    The map is treated as a probability distribution over the pixels; the result is the root
    mean square of its row and column standard deviations.  For a Gaussian-shaped field this is
    the Gaussian's sigma, the quantity Luo et al. (2016) show grows like the square root of the
    depth of a plain convolutional stack.
    """
    h, w = erf.shape
    p = erf.double().abs()
    p = p / p.sum()
    rows, cols = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
    pr, pc = p.sum(1), p.sum(0)
    var_r = float((pr * rows**2).sum() - (pr * rows).sum() ** 2)
    var_c = float((pc * cols**2).sum() - (pc * cols).sum() ** 2)
    return math.sqrt(max(0.0, (var_r + var_c) / 2))
