"""Progress for long loops: a live bar while someone watches, one summary line when it is done.

Training and sampling loops report through :class:`Progress`.  What it shows depends on where
the code runs, set by the environment variable ``UNET_EDU_PROGRESS``:

* ``bar`` (the default): a tqdm bar (a widget in a notebook, text in a terminal) that redraws at
  most once a second and disappears when the loop ends, followed by one summary line;
* ``summary``: no bar, only the summary line.  The book's executor and the test suite use it: a
  saved notebook should show what happened (``training: 300 steps in 12.4 s, loss 0.041``), not a
  frozen bar, and every bar update is a message the kernel must send (under load, a flood of them
  arrives late and the notebook test times out waiting for output);
* ``off``: nothing at all.

A loop can also switch itself off with ``enabled=False`` (the ``progress=False`` arguments).
"""

from __future__ import annotations

import os
import time

from tqdm.auto import tqdm

__all__ = ["Progress", "progress_mode", "MODES"]

MODES = ("bar", "summary", "off")


def progress_mode() -> str:
    """The display mode chosen by ``UNET_EDU_PROGRESS`` (``bar`` when unset)."""
    mode = os.environ.get("UNET_EDU_PROGRESS", "bar").strip().lower() or "bar"
    if mode not in MODES:
        raise ValueError(f"UNET_EDU_PROGRESS={mode!r} is not a progress mode; set it to one of "
                         f"{', '.join(MODES)} (or unset it for the default, 'bar')")
    return mode


class Progress:
    """Count the steps of a loop of ``total`` steps (starting at ``initial``) under ``desc``.

    ``update(**info)`` advances by one step; ``info`` (e.g. ``loss=0.041``) is shown beside the
    bar and, from the last update, in the summary.  Use it as a context manager, or call
    :meth:`close`, to print the summary line.
    """

    def __init__(self, total: int, desc: str, *, initial: int = 0, enabled: bool = True):
        self.desc, self.total, self.initial, self.n = desc, total, initial, initial
        self.mode = progress_mode() if enabled else "off"
        self.info: dict = {}
        self._start = time.perf_counter()
        self._bar = None
        if self.mode == "bar":
            # mininterval=1: a bar that redraws ten times a second floods a notebook with messages.
            self._bar = tqdm(total=total, initial=initial, desc=desc, leave=False, mininterval=1.0)

    def update(self, n: int = 1, **info) -> None:
        self.n += n
        if info:
            self.info = info
        if self._bar is not None:
            if info:
                self._bar.set_postfix({k: _fmt(v) for k, v in info.items()}, refresh=False)
            self._bar.update(n)

    def summary(self) -> str:
        """One line: what ran, how many steps, how long, and the last reported values."""
        done = self.n - self.initial
        line = f"{self.desc}: {done} step{'s' if done != 1 else ''} in {time.perf_counter() - self._start:.1f} s"
        if self.initial:
            line += f" (resumed at step {self.initial}, now at {self.n} of {self.total})"
        if self.info:
            line += ", " + ", ".join(f"{k} {_fmt(v)}" for k, v in self.info.items())
        return line

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.mode != "off":
            print(self.summary(), flush=True)
        self.mode = "off"  # closing twice prints once

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
