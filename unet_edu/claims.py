"""Stated findings, checked where they are stated.

Each experiment in the book ends with a sentence that states its result ("without clipping,
DDIM-20 diverges").  The cell under it calls :func:`check_claim` with that sentence and the
condition that makes it true, computed from the experiment's own numbers.  When a change in the
package or in the training makes the sentence false, the cell raises :class:`ClaimFailed`
naming the sentence, so executing the book (and CI, which runs every chapter) fails instead of
publishing a page that contradicts itself.
"""

from __future__ import annotations

__all__ = ["ClaimFailed", "check_claim"]


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
