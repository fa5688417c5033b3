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
    """GroupNorm needs ``groups`` to divide ``channels``.

    The suggestion costs little even for absurd numbers (a channel count read from a damaged
    file can have eighteen digits): the search is bounded and divisors are listed for small
    counts only.
    """
    if channels % groups:
        lower = next((g for g in range(min(groups, channels), max(0, groups - 100_000), -1)
                      if channels % g == 0), 1)
        listed = f" (divisors of {channels}: {_divisors(channels)})" if channels <= 10_000 else ""
        raise ValueError(
            f"{where}: GroupNorm with {groups} groups cannot split {channels} channels; use "
            f"norm_groups={lower}{listed} or change the channel counts"
        )


def _divisors(n: int) -> list:
    """The divisors of ``n`` in increasing order, in about sqrt(n) steps."""
    small, large = [], []
    d = 1
    while d * d <= n:
        if n % d == 0:
            small.append(d)
            if d * d != n:
                large.append(n // d)
        d += 1
    return small + large[::-1]
