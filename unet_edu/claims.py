"""Stated findings, checked where they are stated, with verdicts as strong as their evidence.

Each experiment in the book ends with a sentence that states its result.  The cell under it
calls :func:`check_claim` with that sentence and the condition that makes it true, computed
from the experiment's own numbers.  When a change in the package or in the training makes the
sentence false, the cell raises :class:`ClaimFailed` naming the sentence, so executing the book
(and CI, which runs every chapter) fails instead of publishing a page that contradicts itself.
When it holds, the page shows one compact line, ``✓ checked: <sentence> (<numbers>)``.

**Comparing two networks.**  A network's test score varies with its training seed *and* with
the test set it is scored on; three seeds and 512 test digits leave room for both.
:func:`compare` turns per-seed, per-test-item scores of two variants into an effect with a 95%
interval that covers both sources of noise, and one of three verdicts:

* ``"apart"`` — the interval excludes no effect: the two differ, in the direction measured;
* ``"equivalent"`` — the interval lies inside ``±margin``, a margin the sentence states and
  that was fixed before looking at the numbers: any difference is smaller than that;
* ``"not resolved"`` — neither.  More seeds or a larger test set narrow the interval; until
  then the honest sentence is "not resolved", never "no difference".

How the interval is built (:class:`Comparison` keeps every part):

* *seed noise*: the per-seed effect (paired by seed when both variants share seeds and test
  items, as in the book's experiments) has a standard error ``sd / sqrt(n_seeds)``;
* *test-set noise*: the test items are one draw of many possible test sets, and every seed
  was scored on the same draw, so that part of the noise is shared by the seeds and their
  spread cannot show it.  A bootstrap over test items (the seed-averaged scores, resampled
  with replacement) gives its standard error;
* the two add in quadrature, and the interval is ``effect ± t * se`` with Student's t at
  ``n_seeds - 1`` degrees of freedom (few seeds make a wide interval, as they should).  Item
  noise within a seed is counted in both parts, so the interval errs on the wide side.

Effects are differences (``b - a``) or, with ``relative=True``, ratios ``b / a`` computed on the
log scale (an interval ``[0.97, 1.05]`` means "between 3% lower and 5% higher").
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ClaimFailed", "check_claim", "Check", "mean_sd", "pm", "compare", "Comparison",
           "interval", "VERDICTS"]

VERDICTS = ("apart", "equivalent", "not resolved")


class ClaimFailed(AssertionError):
    """A sentence of the book no longer holds for the numbers its chapter computed."""


@dataclass(frozen=True)
class Check:
    """A claim that held: shown as one line (HTML on a page, plain text elsewhere)."""

    claim: str
    evidence: str = ""
    # Whether a notebook has shown the line already: check_claim displays it at once, and a
    # cell ending in check_claim(...) would otherwise show it a second time as its value.
    _shown: bool = field(default=False, compare=False, repr=False)

    def __str__(self) -> str:
        tail = f" ({self.evidence})" if self.evidence else ""
        return f"✓ checked: {self.claim}{tail}"

    __repr__ = __str__

    def _ipython_display_(self) -> None:
        if self._shown:
            return
        object.__setattr__(self, "_shown", True)
        from IPython.display import display

        display({"text/plain": str(self), "text/html": self._repr_html_()}, raw=True)

    def _repr_html_(self) -> str:
        ev = (f' <span class="unet-check-evidence">{html.escape(self.evidence)}</span>'
              if self.evidence else "")
        return (f'<div class="unet-check"><span class="unet-check-mark">✓ checked:</span> '
                f'{html.escape(self.claim)}{ev}</div>')


def _show(obj) -> None:
    """Display ``obj`` richly inside IPython/Jupyter, print it elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython comes with Jupyter
        print(obj)
        return
    if get_ipython() is None:
        print(obj)
    else:
        display(obj)


def check_claim(claim: str, holds: bool, evidence: str = "") -> Check:
    """Show ``✓ checked: claim (evidence)`` when ``holds`` is true; raise :class:`ClaimFailed`
    otherwise.

    ``evidence`` (the numbers behind the verdict) is shown with the claim and added to the
    error, so both say what was measured; when it fails, rewrite the sentence, or find what
    changed, before publishing again.  Returns the :class:`Check` (already displayed).
    """
    if not isinstance(claim, str) or not claim.strip():
        raise ValueError(f"check_claim needs the sentence it checks as text, got {claim!r}")
    if not isinstance(holds, bool):
        try:
            holds = bool(holds)  # numpy and torch booleans
        except (RuntimeError, ValueError) as err:  # e.g. a tensor of several booleans
            raise ValueError(f"check_claim({claim!r}): the condition must be one true/false "
                             f"value, got {holds!r}; combine several with all() or any()"
                             ) from err
    if not holds:
        detail = f" ({evidence})" if evidence else ""
        raise ClaimFailed(f"the book says: {claim!r}, but this run measured otherwise{detail}; "
                          f"rewrite the sentence to match the numbers, or find what changed")
    check = Check(claim, evidence)
    _show(check)
    return check


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


def _t_quantile(level: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, df))


def interval(estimate: float, se_seed: float, se_items: float = 0.0, n_seeds: int = 3,
             level: float = 0.95) -> tuple[float, float]:
    """``estimate ± t * sqrt(se_seed² + se_items²)``, t at ``n_seeds - 1`` degrees of freedom.

    The building block of :func:`compare`, for effects that are not a mean over test items
    (a Fréchet distance of sample sets, say): give the standard error over seeds and, from a
    bootstrap of the test set, over test items.
    """
    if n_seeds < 2:
        raise ValueError(f"an interval over seeds needs at least 2 seeds, got {n_seeds}")
    half = _t_quantile(level, n_seeds - 1) * math.hypot(se_seed, se_items)
    return estimate - half, estimate + half


@dataclass(frozen=True)
class Comparison:
    """The effect of going from variant ``a`` to variant ``b``, its interval and verdict.

    ``effect``, ``low`` and ``high`` are differences ``b - a`` or, when ``relative``, ratios
    ``b / a``; ``margin`` is on the same scale as the distance from "no effect" (an absolute
    difference, or a relative one such as 0.05 for ±5%).  ``se_seed`` and ``se_items`` are the
    two parts of the standard error (on the log scale for ratios).
    """

    effect: float
    low: float
    high: float
    verdict: str
    margin: float | None
    relative: bool
    n_seeds: int
    n_items: int
    se_seed: float
    se_items: float
    level: float = 0.95

    @property
    def apart(self) -> bool:
        return self.verdict == "apart"

    @property
    def equivalent(self) -> bool:
        """The whole interval lies within ``±margin`` (also when the verdict is "apart": a
        resolved difference that is still smaller than the margin)."""
        if self.margin is None:
            return False
        null = 1.0 if self.relative else 0.0
        if self.relative:
            return 1 - self.margin < self.low and self.high < 1 + self.margin
        return null - self.margin < self.low and self.high < null + self.margin

    @property
    def not_resolved(self) -> bool:
        return self.verdict == "not resolved"

    def describe(self, digits: int = 3) -> str:
        """E.g. ``ratio 1.031 [1.012, 1.050] (95%, 10 seeds x 512 items): apart``."""
        what = "ratio" if self.relative else "difference"
        fmt = f"{{:.{digits}g}}" if not self.relative else f"{{:.{digits}f}}"
        verdict = self.verdict
        if self.verdict == "equivalent" or (self.apart and self.equivalent):
            m = f"{self.margin:.0%}" if self.relative else fmt.format(self.margin)
            verdict = ("equivalent" if self.verdict == "equivalent" else "apart, and") + \
                f" within ±{m}"
        return (f"{what} {fmt.format(self.effect)} [{fmt.format(self.low)}, "
                f"{fmt.format(self.high)}] ({self.level:.0%}, {self.n_seeds} seeds x "
                f"{self.n_items} items): {verdict}")

    __str__ = describe


def _as_scores(x, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"compare: {name} must hold one score per (seed, test item), shape "
                         f"(n_seeds, n_items), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"compare: {name} holds NaN or infinite scores; score the runs again "
                         f"or drop the broken ones before comparing")
    return arr


def compare(a, b, *, margin: float | None = None, relative: bool = False, paired: bool = True,
            level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> Comparison:
    """Compare variant ``b`` with variant ``a`` from their per-seed, per-item test scores.

    ``a`` and ``b`` have shape ``(n_seeds, n_items)``: row ``s`` holds the score of seed
    ``s``'s network on each test item (a per-digit error, a per-image IoU, ...), the same
    items in the same order for both.  ``paired`` (the default) pairs row ``s`` of ``a`` with
    row ``s`` of ``b`` (same seed number, same data order); with ``paired=False`` the seeds are
    independent and their counts may differ.  ``margin`` is the equivalence margin the
    sentence states (e.g. ``0.05`` with ``relative=True`` for ±5%), fixed before looking;
    without one the verdict is "apart" or "not resolved".

    The effect is ``mean(b) - mean(a)``, or ``mean(b) / mean(a)`` when ``relative``; see the
    module docstring for how the interval covers seed and test-set noise.
    """
    a, b = _as_scores(a, "a"), _as_scores(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"compare: a scores {a.shape[1]} test items and b {b.shape[1]}; score "
                         f"both variants on the same test items")
    if paired and a.shape[0] != b.shape[0]:
        raise ValueError(f"compare: paired=True needs the same seeds for both variants, got "
                         f"{a.shape[0]} and {b.shape[0]}; pass paired=False for independent seeds")
    if min(a.shape[0], b.shape[0]) < 2:
        raise ValueError(f"compare: an interval over seeds needs at least 2 seeds per variant, "
                         f"got {a.shape[0]} and {b.shape[0]}; train more seeds")
    if margin is not None and not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"compare: margin must be a positive number (or None), got {margin!r}")
    if relative and ((a <= 0).any() or (b <= 0).any()):
        raise ValueError("compare: relative=True compares ratios of positive scores (errors, "
                         "distances); these scores include zero or negative values: use "
                         "relative=False")
    if not 0 < level < 1:
        raise ValueError(f"compare: level must lie between 0 and 1, e.g. 0.95, got {level!r}")

    def stat(mean_a, mean_b):
        return np.log(mean_b / mean_a) if relative else mean_b - mean_a

    ma, mb = a.mean(1), b.mean(1)  # per-seed means
    effect = float(stat(ma.mean(), mb.mean()))
    if paired:
        per_seed = stat(ma, mb)
        n = len(per_seed)
        se_seed = float(per_seed.std(ddof=1) / math.sqrt(n))
        df = n - 1
    else:
        if relative:  # delta method on the log of each mean
            va = ma.var(ddof=1) / len(ma) / ma.mean() ** 2
            vb = mb.var(ddof=1) / len(mb) / mb.mean() ** 2
        else:
            va, vb = ma.var(ddof=1) / len(ma), mb.var(ddof=1) / len(mb)
        se_seed = float(math.sqrt(va + vb))
        # Welch-Satterthwaite degrees of freedom
        den = (va**2 / (len(ma) - 1) if va else 0.0) + (vb**2 / (len(mb) - 1) if vb else 0.0)
        df = (va + vb) ** 2 / den if den else min(len(ma), len(mb)) - 1
    # Test-set noise: bootstrap over items of the seed-averaged scores.
    ia, ib = a.mean(0), b.mean(0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.shape[1], size=(n_boot, a.shape[1]))
    boots = stat(ia[idx].mean(1), ib[idx].mean(1))
    se_items = float(np.std(boots, ddof=1)) if a.shape[1] > 1 else 0.0
    half = _t_quantile(level, df) * math.hypot(se_seed, se_items)
    low, high = effect - half, effect + half
    null = 0.0
    if relative:
        effect, low, high, null = math.exp(effect), math.exp(low), math.exp(high), 1.0
    if low > null or high < null:
        verdict = "apart"
    elif margin is not None and (
            (relative and 1 - margin < low and high < 1 + margin)
            or (not relative and -margin < low and high < margin)):
        verdict = "equivalent"
    else:
        verdict = "not resolved"
    return Comparison(effect, low, high, verdict, margin, relative, max(a.shape[0], b.shape[0]),
                      a.shape[1], se_seed, se_items, level)
