"""Chapter 3 — the receptive field.  Checkers for the exercises.

Each checker computes the right answer with the package (never a stored number), compares it
with yours, and prints a verdict (it returns None).
"""

from __future__ import annotations

from . import verdict
from ..receptive_field import LayerSpec, layer_table

__all__ = ["chain_rf", "unet_deepest_path", "check_rf", "check_dilated_rf", "check_unet_path_rf"]


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
