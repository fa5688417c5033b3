"""Stated findings, checked where they are stated.

Each experiment in the book ends with a sentence that states its result ("without clipping,
DDIM-20 diverges").  The cell under it calls :func:`check_claim` with that sentence and the
condition that makes it true, computed from the experiment's own numbers.  When a change in the
package or in the training makes the sentence false, the cell raises :class:`ClaimFailed`
naming the sentence, so executing the book (and CI, which runs every chapter) fails instead of
publishing a page that contradicts itself.
"""

from __future__ import annotations

import math

__all__ = ["ClaimFailed", "check_claim", "mean_sd", "pm", "measurably_apart"]


class ClaimFailed(AssertionError):
    """A sentence of the book no longer holds for the numbers its chapter computed."""


def check_claim(claim: str, holds: bool, evidence: str = "") -> None:
    """Print ``claim holds`` when ``holds`` is true; raise :class:`ClaimFailed` otherwise.

    ``evidence`` (the numbers behind the verdict) is added to the error, so the message says
    what was measured; rewrite the sentence, or find what changed, before publishing again.
    """
    if not isinstance(holds, bool):
        holds = bool(holds)  # numpy and torch booleans
    if not holds:
        detail = f" ({evidence})" if evidence else ""
        raise ClaimFailed(f"the book says: {claim!r}, but this run measured otherwise{detail}; "
                          f"rewrite the sentence to match the numbers, or find what changed")
    print(f"claim holds: {claim}")


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (divisor n - 1) of per-seed results."""
    xs = [float(v) for v in values]
    if len(xs) < 2:
        raise ValueError(f"a spread needs at least two seeds' results, got {len(xs)}")
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def pm(values, digits: int = 4) -> str:
    """``"mean ± sd"`` of per-seed results, e.g. ``0.0250 ± 0.0007``."""
    m, sd = mean_sd(values)
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def measurably_apart(a, b, factor: float = 2.0) -> bool:
    """The book's rule for a difference: the means of two variants' per-seed results are
    more than ``factor`` times the larger seed-to-seed standard deviation apart.

    Below that, the book runs three seeds and says there is no measurable difference.
    """
    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    return abs(ma - mb) > factor * max(sa, sb)
