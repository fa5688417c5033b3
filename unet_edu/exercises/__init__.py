"""Checkers for the chapters' exercises: ``check_...`` functions that tell you if you are right.

One module per chapter (``unet_edu.exercises.chapter1`` ...).  Each checker takes your answer,
compares it with a value the package *computes* (never a stored number), and prints a short
verdict with a hint.  It returns None on purpose: a notebook shows a cell's last value in a box
of its own, and a bare ``True`` under the verdict would only repeat it.
"""


def verdict(ok: bool, right: str, hint: str) -> None:
    """Print the outcome of a check: "Correct: ..." with the explanation, or "Not yet: ..." with
    a hint."""
    print(("Correct: " + right) if ok else ("Not yet: " + hint))
