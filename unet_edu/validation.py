"""Input checks that turn shape mistakes into errors a learner can act on.

PyTorch reports a bad input deep inside a layer ("Sizes of tensors must match except in
dimension 1"), far from the cause.  The models call these checks first, so the message names
the problem *and* the fix, e.g. ``height 30 is not divisible by 4 (2^2 for 3 levels); use 28
or 32``.  Every check raises :class:`ValueError` and never modifies its input.
"""

from __future__ import annotations

import torch

__all__ = [
    "nearest_multiples",
    "check_groups",
]


def nearest_multiples(n: int, m: int) -> tuple[int, int]:
    """The multiples of ``m`` just below and just above ``n`` (the lower one at least ``m``)."""
    below = max(m, (n // m) * m)
    above = below + m if below <= n else below
    return below, above


def check_groups(channels: int, groups: int, where: str) -> None:
    """GroupNorm needs ``groups`` to divide ``channels``."""
    if channels % groups:
        divisors = [g for g in range(1, channels + 1) if channels % g == 0]
        lower = max(g for g in divisors if g <= groups)
        raise ValueError(
            f"{where}: GroupNorm with {groups} groups cannot split {channels} channels; use "
            f"norm_groups={lower} (divisors of {channels}: {divisors}) or change the channel counts"
        )
