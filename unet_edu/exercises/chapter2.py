"""Chapter 2 — the U: encoder, decoder, skip connections.  Checkers for the exercises.

Each checker computes the right answer with the package (never a stored number), compares it
with yours, and prints a verdict (it returns None).
"""

from __future__ import annotations

from . import verdict
from ..models import UNet2015, count_parameters

__all__ = [
    "check_output_size",
    "check_concat_channels",
    "check_parameter_count",
    "check_valid_input",
]


def check_output_size(input_size: int, answer, levels: int = 5) -> None:
    """Output side of the ``padding="valid"`` U-Net with ``levels`` levels for an input side.

    Answer ``None`` if the input does not fit (a pooled size would be odd).
    """
    net = UNet2015(features=(1,) * levels, padding="valid")
    right = net.output_size(input_size)
    ok = (answer is None and right is None) or (answer is not None and right is not None and int(answer) == right)
    if right is None:
        lo, hi = net.valid_sizes_near(input_size)
        text = f"{input_size} does not fit; the nearest sizes that do are {lo} and {hi}."
    else:
        text = f"{input_size} -> {right}."
    verdict(ok, text, "every unpadded 3x3 convolution trims 2 pixels, a block trims 4; pooling "
                      "halves (and needs an even size); an up-convolution doubles.")


def check_concat_channels(features, level: int, answer: int) -> None:
    """Channels entering decoder level ``level`` after the concatenation (``UNet2015(features=...)``)."""
    net = UNet2015(features=tuple(features), skip="concat")
    j = net.levels - 2 - level
    if not 0 <= j < len(net.decode):
        raise ValueError(f"level must lie in 0..{net.levels - 2} for {len(features)} levels")
    right = net.decode[j][0].in_channels
    verdict(int(answer) == right, f"{right} channels: {right // 2} from the skip and {right // 2} "
            "from the up-convolution.", "the up-convolution halves the channels of the level "
            "below; the skip brings the encoder map of the same level.")


def check_parameter_count(features, skip: str, answer: int, in_channels: int = 1, out_channels: int = 2) -> None:
    """Parameters of ``UNet2015(in_channels, out_channels, features, skip=skip)``."""
    right = count_parameters(UNet2015(in_channels, out_channels, tuple(features), skip=skip))
    verdict(int(answer) == right, f"{right:,} parameters.",
            "only the first convolution of each decoder block changes with the skip: "
            "with concat it reads 2c channels, with add or none it reads c.")


def check_valid_input(n: int, answer: int, levels: int = 5) -> None:
    """The smallest input side >= ``n`` that the valid-padding U-Net accepts."""
    net = UNet2015(features=(1,) * levels, padding="valid")
    right = n if net.output_size(n) else net.valid_sizes_near(n)[1]
    verdict(int(answer) == right, f"{right} (output {net.output_size(right)}).",
            "walk down the encoder: after each block (-4) the size must be even to pool.")
