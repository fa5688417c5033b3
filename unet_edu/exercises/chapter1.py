"""Chapter 1 — why not a naive CNN?  Checkers for the exercises.

Each checker computes the right answer with the package (never a stored number), compares it
with yours, and prints a verdict (it returns None).
"""

from __future__ import annotations

from . import verdict
from ..models import NaiveCNN, count_parameters
from ..receptive_field import layer_table

__all__ = [
    "naive_receptive_field",
    "check_receptive_field",
    "check_dense_decisions",
    "check_naive_parameters",
    "check_layers_needed",
]


def naive_receptive_field(depth: int) -> int:
    """Receptive field (side, in pixels) of a :class:`NaiveCNN` with ``depth`` 3x3 layers."""
    return layer_table(NaiveCNN(hidden=1, depth=depth))[-1]["rf"]


def check_receptive_field(depth: int, answer: int) -> None:
    """Your receptive field for a ``depth``-layer stack of 3x3 convolutions."""
    right = naive_receptive_field(depth)
    verdict(int(answer) == right, f"{depth} layers of 3x3 see {right} x {right} pixels.",
            "each 3x3 layer (stride 1) adds 2 pixels to the side: start from 1.")


def check_dense_decisions(height: int, width: int, answer: int) -> None:
    """How many per-pixel decisions a dense predictor makes on a ``height x width`` image."""
    right = height * width
    verdict(int(answer) == right, f"{right:,} decisions, one per pixel.",
            "one label (or one noise value per channel) for every pixel: count the pixels.")


def check_naive_parameters(hidden: int, depth: int, answer: int, in_channels: int = 1) -> None:
    """The parameter count of ``NaiveCNN(in_channels, hidden, depth)``."""
    right = count_parameters(NaiveCNN(in_channels, hidden=hidden, depth=depth))
    verdict(int(answer) == right, f"{right:,} parameters.",
            "a 3x3 convolution from a to b channels has 9*a*b weights and b biases; the "
            "first layer reads the image, the last writes the image.")


def check_layers_needed(target: int, answer: int) -> None:
    """The fewest 3x3 layers whose receptive field covers ``target`` pixels (side)."""
    depth = 2
    while naive_receptive_field(depth) < target:
        depth += 1
    verdict(int(answer) == depth, f"{depth} layers reach {naive_receptive_field(depth)} >= {target} pixels.",
            "solve 1 + 2 * depth >= target for the smallest whole depth.")
