"""Checkers for the chapters' exercises: ``check_...`` functions that tell you if you are right.

One module per chapter (``unet_edu.exercises.chapter1`` ... ``chapter7``).  Two kinds:

* **Arithmetic exercises** (``check_output_size(652, answer)``, ...): the checker takes your
  number, compares it with a value the package *computes* (never a stored number), and prints
  a short verdict with a hint.  It returns None on purpose: a notebook shows a cell's last
  value in a box of its own, and a bare ``True`` under the verdict would only repeat it.
* **Build-it exercises** (``check_double_conv(MyDoubleConv)``, ...): you write a piece of a
  network in a skeleton cell and the checker runs it against the package's own implementation
  on ordinary and edge inputs (odd sizes, a batch of one, the first and last timestep, ...).
  It returns one line of :class:`~unet_edu.exercises.feedback.Feedback` -- not attempted yet,
  correct, or the likely mistake and where to look -- which a notebook shows as a coloured line
  and a terminal as text.  :mod:`unet_edu.exercises.feedback` says how your code is run.
"""


def verdict(ok: bool, right: str, hint: str) -> None:
    """Show the outcome of a check: "Correct: ..." with the explanation, or "Not yet: ..." with
    a hint.  A terminal gets the line as text; a notebook gets it as a coloured line that wraps
    to the page's column (an HTML line, like the build-it checkers' feedback)."""
    line = ("Correct: " + right) if ok else ("Not yet: " + hint)
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:  # no IPython: a plain interpreter
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print(line)
        return
    from .feedback import Feedback

    display(HTML(Feedback("pass" if ok else "hint", right if ok else hint)._repr_html_()))
