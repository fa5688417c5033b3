"""How the build-it exercises talk to you: one line of feedback, and your code run safely.

In a build-it exercise you write a piece of a network (a block, a crop, a sampler step) in a
cell, and a ``check_...`` function runs it against the package's own implementation.  This
module holds what every such checker shares:

* :class:`Feedback` -- the one line a checker returns.  A notebook shows it as a coloured
  line (``_repr_html_``: a ``<div class="unet-exercise unet-exercise--<status>">``); a
  terminal shows its text, which starts with a mark: ``○`` not attempted yet, ``✓`` correct,
  ``✗`` a diagnosed mistake with a hint, ``⚠`` something that keeps the checker from running
  your code at all (not a function, a wrong signature, an exception inside it).
* :func:`checker` -- the decorator that makes a checker safe to call on anything: it runs in
  its own random stream (your notebook's stream is left as it was), silences warnings, and
  turns every problem into one line of feedback instead of a traceback.
* :func:`run` -- calls your code once.  A ``NotImplementedError`` (what an unfilled skeleton
  raises) means "not attempted yet"; any other exception is reported with the line of *your*
  code that raised it.
* :func:`pick` -- for the cells that use what you built: your implementation when its
  checker passes, otherwise the worked solution, with a line that says which one runs.
* :class:`ReaderModule` and :func:`replace_modules` -- put your function inside a package
  model in place of one of its layers.

"Not attempted" is detected by the exception, not by looking at your source: the skeletons
end with ``raise NotImplementedError("fill in ...")``, and a class without a ``forward``
raises the same error when it is called.  A function that returns ``None`` (a body of
``pass``, or a missing ``return``) is reported as not attempted too, with a reminder about
``return``.
"""

from __future__ import annotations

import functools
import html
import inspect
import linecache
import os
import re
import sysconfig
import traceback
import warnings

import torch
from torch import nn

__all__ = [
    "Feedback",
    "Verdict",
    "checker",
    "run",
    "Ran",
    "todo",
    "passed",
    "hint",
    "problem",
    "require_callable",
    "require_class",
    "require_signature",
    "require_tensor",
    "require_number",
    "close",
    "pick",
    "ReaderModule",
    "replace_modules",
]

_MARK = {"todo": "○", "pass": "✓", "hint": "✗", "error": "⚠"}
_LABEL = {"todo": "not attempted yet: ", "pass": "correct: ", "hint": "not yet: ",
          "error": "can't check this yet: "}
_CODE = re.compile(r"`([^`]+)`")


class Feedback:
    """The verdict of a checker: a ``status`` and one line of ``text``.

    ``status`` is ``"todo"`` (not attempted yet), ``"pass"`` (correct), ``"hint"`` (it runs,
    but a mistake was found; the text names it and where to look) or ``"error"`` (the checker
    could not run your code: the text says what to change).  ``str(feedback)`` is the line with
    its mark; a notebook shows the HTML version, styled by the class
    ``unet-exercise--<status>``.  Words between backticks are code (``<code>`` in HTML).
    """

    def __init__(self, status: str, text: str):
        if status not in _MARK:
            raise ValueError(f"status must be one of {sorted(_MARK)}, got {status!r}")
        self.status = status
        self.text = " ".join(str(text).split())  # one line, whatever the message held

    @property
    def passed(self) -> bool:
        """True when the checker found your code correct."""
        return self.status == "pass"

    @property
    def attempted(self) -> bool:
        """False while the skeleton is still unfilled."""
        return self.status != "todo"

    @property
    def line(self) -> str:
        """The line as a terminal shows it: mark, label, text."""
        return f"{_MARK[self.status]} {_LABEL[self.status]}{self.text}"

    def __str__(self) -> str:
        return self.line

    def __repr__(self) -> str:
        return self.line

    def _repr_html_(self) -> str:
        body = _CODE.sub(r"<code>\1</code>", html.escape(self.text, quote=False))
        return (f'<div class="unet-exercise unet-exercise--{self.status}">'
                f'<span class="unet-exercise__mark">{_MARK[self.status]}</span> '
                f'<span class="unet-exercise__label">{html.escape(_LABEL[self.status])}'
                f'</span>{body}</div>')


def todo(what: str, note: str = "") -> Feedback:
    """The line for an unfilled skeleton: fill in ``what`` above and run the check again."""
    extra = f" ({note})" if note else ""
    return Feedback("todo", f"fill in `{what}` above, then run this cell again{extra}")


def passed(text: str) -> Feedback:
    """The line for correct code: ``text`` says what was checked."""
    return Feedback("pass", text)


def hint(text: str) -> Feedback:
    """The line for a diagnosed mistake: ``text`` names it and the fix."""
    return Feedback("hint", text)


def problem(text: str) -> Feedback:
    """The line for input the checker cannot use: ``text`` says what to change."""
    return Feedback("error", text)


class Verdict(Exception):
    """Raised inside a checker to stop at once with this feedback (caught by :func:`checker`)."""

    def __init__(self, feedback: Feedback):
        super().__init__(feedback.line)
        self.feedback = feedback


def checker(func):
    """Make ``func`` a checker: it returns one :class:`Feedback` and never raises.

    Inside, ``raise Verdict(feedback)`` stops the check with that line.  The check runs with
    torch's CPU random stream forked and seeded (so it is repeatable and your notebook's own
    random numbers are not disturbed) and with warnings silenced (a warning from inside your
    code would print a second, confusing message).  An exception the checker did not foresee
    becomes an ``error`` line that names it.
    """

    @functools.wraps(func)
    def check(*args, **kwargs):
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("ignore")
            torch.manual_seed(0)
            try:
                result = func(*args, **kwargs)
            except Verdict as stop:
                return stop.feedback
            except Exception as err:  # a case no diagnosis foresaw: still one line
                return problem(f"the check stopped at {type(err).__name__}: "
                               f"{_first_line(err)}; compare your code with the task above")
        return result

    return check


# ---------------------------------------------------------------------------------------------
# Running the reader's code
# ---------------------------------------------------------------------------------------------
def _library_dirs() -> tuple[str, ...]:
    """Folders whose frames are not the reader's: Python's own, installed packages, this one."""
    paths = sysconfig.get_paths()
    dirs = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # unet_edu
    dirs.add(os.path.dirname(os.path.abspath(torch.__file__)))
    return tuple(os.path.abspath(d) + os.sep for d in dirs if d)


_LIBRARY = _library_dirs()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= 220 else line[:217] + "..."


def _where(err: BaseException) -> str:
    """``line N (`code`)`` of the innermost frame that belongs to the reader, or ``""``."""
    frames = traceback.extract_tb(err.__traceback__)
    for frame in reversed(frames):
        name = os.path.abspath(frame.filename) if not frame.filename.startswith("<") else ""
        if name and name.startswith(_LIBRARY):
            continue
        code = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
        if len(code) > 70:
            code = code[:67] + "..."
        return f"line {frame.lineno}" + (f" (`{code}`)" if code else "")
    return ""


class Ran:
    """What one call of the reader's code gave: ``value``, or the exception ``error``."""

    def __init__(self, value=None, error: BaseException | None = None):
        self.value, self.error = value, error

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def message(self) -> str:
        """The exception's first line (empty when the call succeeded)."""
        return "" if self.error is None else _first_line(self.error)

    def failure(self, what: str, fix: str = "") -> Feedback:
        """The error line for this exception: what raised, where in your code, and ``fix``."""
        err = self.error
        where = _where(err)
        text = (f"`{what}` raised {type(err).__name__}" + (f" at {where}" if where else "")
                + f": {_first_line(err)}")
        return problem(text + (f"; {fix}" if fix else "; fix it and run this cell again"))


def run(fn, *args, what: str, none_is_todo: bool = True, **kwargs) -> Ran:
    """Call the reader's ``fn(*args, **kwargs)`` once and capture the outcome.

    An unfilled skeleton (``NotImplementedError``) stops the check with the "not attempted"
    line.  A result of ``None`` does too (with a reminder to ``return``) unless
    ``none_is_todo`` is False.  Any other exception is returned in :class:`Ran` so that the
    checker can diagnose it.
    """
    try:
        value = fn(*args, **kwargs)
    except NotImplementedError:
        raise Verdict(todo(what)) from None
    except Exception as err:  # the reader's code failed: the checker decides what it means
        return Ran(error=err)
    if value is None and none_is_todo:
        raise Verdict(todo(what, "it returned None: if you filled it in, add the `return`"))
    return Ran(value)


def _describe(obj) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, nn.Module):
        return f"a {type(obj).__name__} module"
    return f"a {type(obj).__name__}"


def require_callable(fn, what: str, params: str) -> None:
    """``fn`` must be a function (not a class, not the result of calling it)."""
    if inspect.isclass(fn) or not callable(fn) or isinstance(fn, nn.Module):
        got = f"the class {fn.__name__}" if inspect.isclass(fn) else _describe(fn)
        raise Verdict(problem(f"pass the function `{what}` itself (it takes {params}), as in "
                              f"`check_...({what})`, not its result; got {got}"))


def require_class(cls, what: str, base=nn.Module) -> None:
    """``cls`` must be a class derived from ``base`` (the class itself, not an instance)."""
    if isinstance(cls, base):
        raise Verdict(problem(f"pass the class `{what}` itself, not an instance of it: "
                              f"`check_...({what})`, not `check_...({what}(...))`"))
    if not inspect.isclass(cls):
        raise Verdict(problem(f"pass the class `{what}` itself; got {_describe(cls)}"))
    if not issubclass(cls, base):
        name = "torch.nn.Module" if base is nn.Module else f"{base.__module__}.{base.__name__}"
        raise Verdict(problem(f"`{what}` must derive from `{name}` (class {what}(nn.Module): "
                              f"...), so that its layers are registered and it can be called "
                              f"like a layer"))


def require_signature(fn, what: str, args: tuple, params: str) -> None:
    """``fn`` must accept these positional ``args`` (``params`` names them for the message)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin or C function: let the call itself tell
    try:
        sig.bind(*args)
    except TypeError:
        raise Verdict(problem(f"`{what}` must take {params}; yours takes {what}{sig}: keep "
                              f"the signature of the skeleton")) from None


def require_tensor(value, what: str, shape=None, fix: str = "") -> torch.Tensor:
    """``value`` must be a tensor (of ``shape``, when given); anything else stops the check."""
    if isinstance(value, tuple) and value and isinstance(value[0], torch.Tensor):
        raise Verdict(problem(f"`{what}` returned a tuple of {len(value)}; return one tensor"
                              + (f" ({fix})" if fix else "")))
    if not isinstance(value, torch.Tensor):
        raise Verdict(problem(f"`{what}` must return a torch.Tensor, got {_describe(value)}"
                              + (f"; {fix}" if fix else "")))
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise Verdict(hint(f"`{what}` returned shape {tuple(value.shape)} where "
                           f"{tuple(shape)} is expected" + (f": {fix}" if fix else "")))
    return value


def require_number(value, what: str) -> float:
    """``value`` must be a real number (a one-element tensor counts); return it as a float."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            import numpy as np

            if isinstance(value, np.generic) and np.isreal(value):
                return float(value)
        except ImportError:  # pragma: no cover - numpy comes with torch
            pass
        raise Verdict(problem(f"`{what}` must return a number, got {_describe(value)}"))
    return float(value)


def close(a, b, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Same shape and equal within the tolerances (float64 comparison; NaN never matches)."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return False
    if tuple(a.shape) != tuple(b.shape):
        return False
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return bool(torch.allclose(a, b, atol=atol, rtol=rtol))


def pick(yours, solution, check, what: str):
    """Return ``yours`` when ``check(yours)`` passes, else ``solution``; print which one runs.

    The cells that *use* what you built call this, so that they run (with the worked solution)
    before you have filled in the skeleton, and switch to your code once it is correct.
    """
    verdict = check(yours)
    if verdict.passed:
        print(f"using your {what}")
        return yours
    state = "not filled in yet" if not verdict.attempted else "not passing its check yet"
    print(f"{what}: {state}, using the worked solution")
    return solution


# ---------------------------------------------------------------------------------------------
# Putting the reader's function inside a package model
# ---------------------------------------------------------------------------------------------
class ReaderModule(nn.Module):
    """A layer whose forward is the reader's function: ``fn(layer, *inputs)``.

    ``layer`` is the package's layer, kept as a submodule, so its weights (and a trained
    model's state) stay where they were; only the computation is yours.
    """

    def __init__(self, layer: nn.Module, fn):
        super().__init__()
        self.layer = layer
        self.fn = fn

    def forward(self, *inputs):
        return self.fn(self.layer, *inputs)


def replace_modules(model: nn.Module, kind: type, make) -> int:
    """Replace, in place, every submodule of type ``kind`` by ``make(module)``; return how many.

    Works through ``nn.Sequential``, ``nn.ModuleList`` and ``nn.ModuleDict`` alike, because it
    sets the new module under the same name on the same parent.
    """
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, kind) and name]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make(module))
    return len(targets)
