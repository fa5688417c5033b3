"""Chapter 3 — the receptive field.  Checkers for the exercises.

The arithmetic exercises (``check_rf``, ...) compute the right number with the package (never
a stored number), compare it with yours, and print a verdict (they return None).  The build-it
ones run code you write:

* :func:`check_recurrence` -- your receptive-field recurrence along a chain of layers
  (strides, dilations and transposed convolutions included), against
  :func:`~unet_edu.receptive_field.layer_table`;
* :func:`check_field_mask` -- your exact receptive field by back-propagation, against
  :func:`~unet_edu.receptive_field.exact_receptive_field`.

They return one line of :class:`~unet_edu.exercises.feedback.Feedback`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import verdict
from .feedback import (Verdict, checker, hint, passed, require_callable,
                       require_number, require_signature, require_tensor, run)
from ..models import NaiveCNN, UNet2015
from ..receptive_field import LayerSpec, exact_receptive_field, layer_table, rf_extent

__all__ = ["chain_rf", "unet_deepest_path", "check_rf", "check_dilated_rf", "check_unet_path_rf",
           "recurrence_variant", "check_recurrence", "check_field_mask"]


def chain_rf(kernel_sizes, strides=None, dilations=None) -> int:
    """Receptive field (side) of a chain of layers, by the recurrence of :func:`layer_table`."""
    n = len(kernel_sizes)
    strides = list(strides) if strides is not None else [1] * n
    dilations = list(dilations) if dilations is not None else [1] * n
    if not len(strides) == len(dilations) == n:
        raise ValueError("kernel_sizes, strides and dilations must have the same length")
    specs = [LayerSpec(f"layer{i + 1}", k, s, d) for i, (k, s, d) in enumerate(zip(kernel_sizes, strides, dilations))]
    return layer_table(specs)[-1]["rf"]


def unet_deepest_path(levels: int, convs_per_block: int = 2) -> list[LayerSpec]:
    """The layers met from the input to the output through the bottleneck of a U-Net with
    ``levels`` levels: per level ``convs_per_block`` 3x3 convolutions and a 2x2 max-pool on the
    way down, the bottleneck's convolutions, and a 2x2 transposed convolution plus the
    convolutions on the way up (the final 1x1 head changes nothing)."""
    if levels < 2:
        raise ValueError(f"a U-Net has at least 2 levels, got {levels}")
    path = []
    for level in range(levels - 1):
        path += [LayerSpec(f"enc{level}.conv{i + 1}", 3) for i in range(convs_per_block)]
        path.append(LayerSpec(f"pool{level}", 2, 2))
    path += [LayerSpec(f"bottleneck.conv{i + 1}", 3) for i in range(convs_per_block)]
    for level in reversed(range(levels - 1)):
        path.append(LayerSpec(f"up{level}", 2, 2, transposed=True))
        path += [LayerSpec(f"dec{level}.conv{i + 1}", 3) for i in range(convs_per_block)]
    return path


def check_rf(kernel_sizes, strides, answer: int) -> None:
    """Your receptive field for a chain with these kernel sizes and strides."""
    right = chain_rf(kernel_sizes, strides)
    verdict(int(answer) == right, f"the chain sees {right} x {right} input pixels.",
            "walk the chain: each layer adds (kernel - 1) times the current jump, then the "
            "jump is multiplied by the stride. Start from rf = 1, jump = 1.")


def check_dilated_rf(dilations, answer: int, kernel: int = 3) -> None:
    """Your receptive field for a stack of ``kernel`` x ``kernel`` convolutions with these dilations."""
    right = chain_rf([kernel] * len(dilations), dilations=dilations)
    verdict(int(answer) == right, f"the dilated stack sees {right} x {right} pixels.",
            "a dilated kernel spans dilation * (kernel - 1) + 1 pixels, so each layer adds "
            "dilation * (kernel - 1).")


def check_unet_path_rf(levels: int, answer: int) -> None:
    """Your receptive field along the deepest path of a ``levels``-level U-Net (3x3 convs,
    2x2 pools, 2x2 transposed convolutions)."""
    right = layer_table(unet_deepest_path(levels))[-1]["rf"]
    verdict(int(answer) == right, f"the deepest path of a {levels}-level U-Net sees {right} pixels.",
            "use layer_table(unet_deepest_path(levels)); on the way up a 2x2, stride-2 "
            "transposed convolution adds nothing but halves the jump.")


# --------------------------------------------------------------------------------------------
# Build-it exercises
# --------------------------------------------------------------------------------------------
_RECURRENCE = "my_receptive_field"
_MASK = "my_field_mask"


def recurrence_variant(layers, change: str = "") -> float:
    """The chain recurrence with one deliberate change, for recognising a reader's slip.

    ``change=""`` is the recurrence of :func:`~unet_edu.receptive_field.layer_table` (without
    its final rounding); ``"jump-first"`` multiplies the jump before adding, ``"no-jump"``
    never changes it, ``"k"`` adds ``k`` instead of ``k - 1``, ``"no-dilation"`` ignores
    dilation, ``"transposed-as-conv"`` treats a transposed convolution like a convolution,
    ``"transposed-adds"`` lets it add ``k - 1`` input positions, ``"start-0"`` starts at 0.
    """
    r, j = (0.0 if change == "start-0" else 1.0), 1.0
    for spec in layers:
        d = 1 if change == "no-dilation" else spec.dilation
        k = d * (spec.kernel - 1) + 1
        grow = k if change == "k" else k - 1
        if spec.transposed and change != "transposed-as-conv":
            added = grow if change == "transposed-adds" else math.ceil(k / spec.stride) - 1
            r += added * j
            j = j if change == "no-jump" else j / spec.stride
            continue
        if change == "jump-first":
            j *= spec.stride
            r += grow * j
        else:
            r += grow * j
            j = j if change == "no-jump" else j * spec.stride
    return r


def _chain(kernels, strides=None, dilations=None):
    n = len(kernels)
    strides, dilations = strides or [1] * n, dilations or [1] * n
    return [LayerSpec(f"layer{i + 1}", k, s, d)
            for i, (k, s, d) in enumerate(zip(kernels, strides, dilations))]


def _recurrence_cases():
    return [
        ("five 3x3 convolutions", _chain([3] * 5)),
        ("convolutions, a pool and a strided convolution",
         _chain([3, 3, 2, 3, 3, 3], [1, 1, 2, 1, 2, 1])),
        ("dilations 1, 2, 4, 8", _chain([3] * 4, dilations=[1, 2, 4, 8])),
        ("a stride-3 convolution", _chain([3, 3, 3], [1, 3, 1])),
        ("the deepest path of a 4-level U-Net", unet_deepest_path(4)),
        ("the deepest path of a 5-level U-Net", unet_deepest_path(5)),
        ("a 3x3 transposed convolution of stride 2",
         [LayerSpec("pool", 2, 2), LayerSpec("conv", 3), LayerSpec("up", 3, 2, transposed=True),
          LayerSpec("conv2", 3)]),
        ("an empty chain", []),
    ]


_RECURRENCE_MISTAKES = (
    ("jump-first", "add (k - 1) * jump with the jump *before* this layer, then multiply the "
                   "jump by the stride: a pool's own window is measured in the previous "
                   "layer's spacing"),
    ("no-jump", "a layer of stride s multiplies the jump by s (a transposed one divides it): "
                "after a pool every later layer adds twice as many input pixels"),
    ("k", "each layer adds (k - 1) * jump, not k * jump: a 1x1 layer adds nothing"),
    ("no-dilation", "a dilated kernel spans d * (k - 1) + 1 pixels: use that effective kernel "
                    "(spec.dilation)"),
    ("transposed-as-conv", "a transposed convolution (spec.transposed) of stride s divides the "
                           "jump by s instead of multiplying it, and adds ceil(k / s) - 1 of "
                           "its input positions"),
    ("transposed-adds", "a transposed convolution adds ceil(k / s) - 1 of its input positions, "
                        "not k - 1: a 2x2, stride-2 up-convolution adds nothing"),
    ("start-0", "start from r = 1 (a pixel sees itself) and jump = 1"),
)


@checker
def check_recurrence(my_receptive_field):
    """Does ``my_receptive_field(layers)`` run the receptive-field recurrence?

    ``layers`` is a list of :class:`~unet_edu.receptive_field.LayerSpec` (``kernel``,
    ``stride``, ``dilation``, ``transposed``) from the input to the output; the answer is the
    field's side after the last layer.  Start from ``r = 1``, ``jump = 1``; a layer with
    effective kernel ``k = dilation * (kernel - 1) + 1`` adds ``(k - 1) * jump`` and multiplies
    the jump by its stride; a transposed one adds ``(ceil(k / stride) - 1) * jump`` and divides
    the jump by its stride.  Eight chains are tried, the U-Net's deepest paths and an empty
    chain among them.
    """
    require_callable(my_receptive_field, _RECURRENCE, "(layers)")
    require_signature(my_receptive_field, _RECURRENCE, (_chain([3]),), "(layers)")
    got = {}
    for name, layers in _recurrence_cases():
        ran = run(my_receptive_field, list(layers), what=_RECURRENCE, none_is_todo=bool(layers))
        if not ran.ok:
            if not layers:
                raise Verdict(hint(f"an empty chain (no layers) must give 1, the pixel itself; "
                                   f"yours raised {type(ran.error).__name__}"))
            raise Verdict(ran.failure(_RECURRENCE, f"it failed on {name}"))
        if ran.value is None:
            raise Verdict(hint("an empty chain (no layers) must give 1, the pixel itself; "
                               "yours returned None"))
        got[name] = (layers, require_number(ran.value, _RECURRENCE))
    wrong = [(name, layers, value) for name, (layers, value) in got.items()
             if round(value) != recurrence_variant(layers) and
             abs(value - recurrence_variant(layers)) > 1e-6]
    if not wrong:
        return passed("your recurrence agrees with layer_table on 8 chains: strides, "
                      "dilations, transposed convolutions, the U-Net's deepest paths and an "
                      "empty chain")
    def matches(change, cases):
        return all(abs(value - recurrence_variant(layers, change)) < 1e-6 or
                   round(value) == round(recurrence_variant(layers, change))
                   for layers, value in cases)

    # A slip in the ordinary layers is judged on the chains without transposed convolutions
    # (a reader may handle those differently again); a slip in the transposed ones on all.
    chains = [(layers, value) for layers, value in got.values()
              if not any(spec.transposed for spec in layers)]
    for change, text in _RECURRENCE_MISTAKES:
        scope = list(got.values()) if change.startswith("transposed") else chains
        if matches(change, scope):
            raise Verdict(hint(text))
    name, layers, value = wrong[0]
    right = recurrence_variant(layers)
    table = layer_table(layers) if layers else []
    mine = []
    for k in range(1, len(layers) + 1):  # the first layer after which the reader is wrong
        partial = run(my_receptive_field, list(layers[:k]), what=_RECURRENCE)
        if not partial.ok or partial.value is None:
            break
        if abs(require_number(partial.value, _RECURRENCE) - recurrence_variant(layers[:k])) > 1e-6:
            mine = [layers[k - 1], k]
            break
    where = (f"; the first wrong value comes after layer {mine[1]} ({mine[0].name}: kernel "
             f"{mine[0].kernel}, stride {mine[0].stride}, dilation {mine[0].dilation}"
             f"{', transposed' if mine[0].transposed else ''}), where the field is "
             f"{table[mine[1] - 1]['rf']}") if mine else ""
    raise Verdict(hint(f"on {name} yours gives {value:g} where the recurrence gives {right:g}"
                       + where))


def _mask_cases():
    torch.manual_seed(5)
    naive = NaiveCNN(hidden=2, depth=3)
    valid = UNet2015(features=(1, 1, 1), padding="valid")
    same = UNet2015(in_channels=2, features=(1, 2), padding="same")
    return [("a 3-layer plain stack", naive, (1, 15, 15), (7, 7)),
            ("a 3-layer plain stack", naive, (1, 15, 15), (0, 3)),
            ("a 3-level 'valid' U-Net", valid, (1, 44, 44), (1, 2)),
            ("a 2-level U-Net on 2 channels", same, (2, 12, 16), (5, 9))]


@checker
def check_field_mask(my_field_mask):
    """Does ``my_field_mask(model, input_shape, position)`` find the exact receptive field?

    It must return an ``(H, W)`` bool mask of the input pixels that can change the output at
    ``position = (row, col)`` of the output map, for an input of ``input_shape = (C, H, W)``:
    back-propagate from that one output pixel (summed over channels) through the positive
    linear copy :func:`~unet_edu.receptive_field.linearized_copy` of the model, fed an input
    of ones, and keep the pixels whose gradient is non-zero.  Four cases: a plain stack at
    the centre and near a border, a 'valid' U-Net, and a U-Net with two input channels.
    """
    params = "(model, input_shape, position)"
    require_callable(my_field_mask, _MASK, params)
    for name, model, shape, position in _mask_cases():
        require_signature(my_field_mask, _MASK, (model, shape, position), params)
        ran = run(my_field_mask, model, shape, position, what=_MASK)
        if not ran.ok:
            raise Verdict(ran.failure(_MASK, f"it failed on {name} at {position}"))
        value = ran.value
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        value = require_tensor(value, _MASK)
        want = exact_receptive_field(model, shape, position)
        if tuple(value.shape) != tuple(want.shape):
            if value.numel() == want.numel() or value.shape[-2:] == want.shape:
                raise Verdict(hint(f"your mask has shape {tuple(value.shape)}: sum the "
                                   f"gradient's magnitude over the batch and channel axes, "
                                   f"so that the mask is (H, W) = {tuple(want.shape)}"))
            raise Verdict(hint(f"your mask has shape {tuple(value.shape)}; it must cover the "
                               f"input, (H, W) = {tuple(want.shape)}"))
        if value.dtype != torch.bool:
            raise Verdict(hint("return a bool mask, `grad != 0`, not the gradient itself"))
        if torch.equal(value, want):
            continue
        if value.all():
            raise Verdict(hint("every pixel is marked: back-propagate from the one output pixel "
                               "at `position`, `out[0, :, row, col].sum()`, not from the whole "
                               "output"))
        row, col = position
        if row != col:
            try:
                swapped = exact_receptive_field(model, shape, (col, row))
            except ValueError:
                swapped = None
            if swapped is not None and torch.equal(value, swapped):
                raise Verdict(hint("rows and columns are swapped: position is (row, col), so "
                                   "index the output as out[0, :, row, col]"))
        missing = int((want & ~value).sum())
        extra = int((value & ~want).sum())
        h, w = rf_extent(want)
        if missing and not extra:
            raise Verdict(hint(f"on {name} your mask misses {missing} of the field's "
                               f"{int(want.sum())} pixels: through ReLU and max-pooling a "
                               f"gradient can vanish, so back-propagate through "
                               f"linearized_copy(model) with an input of ones, and keep every "
                               f"non-zero gradient, however small"))
        raise Verdict(hint(f"on {name} at {position} your mask marks {extra} pixel(s) outside "
                           f"the {h} x {w} field and misses {missing}: back-propagate from "
                           f"out[0, :, row, col] of the linear copy and keep grad != 0"))
    return passed("your masks equal exact_receptive_field's: a plain stack at the centre and "
                  "near a border, a 'valid' U-Net, and two input channels")
