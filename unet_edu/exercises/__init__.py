"""Checkers for the chapters' exercises: ``check_...`` functions that tell you if you are right.

One module per chapter (``unet_edu.exercises.chapter1`` ...).  Each checker takes your answer,
compares it with a value the package *computes* (never a stored number), and prints a short
verdict with a hint; it also returns True or False so it can be used in code.
"""


def verdict(ok: bool, right: str, hint: str) -> bool:
    """Print the outcome of a check and return it."""
    print(("Correct: " + right) if ok else ("Not yet: " + hint))
    return ok
