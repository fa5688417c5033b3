"""Interventions on a sampler: change one thing inside a run, and score what it changes.

"The sampler fails because the network is bad at the first steps" is a claim about a cause.
Correlations (the network's loss is worst at ``t = 999``, the division by ``sqrt(alpha_bar)``
is largest there) make such a claim plausible; an intervention tests it.  Run the same
deterministic sampler from the same starting noise twice, once with the network replaced
inside a window of timesteps, and compare the samples.  If the failure came from that window,
swapping in a good network there repairs it; if it came from elsewhere, it does not.

* :class:`TimeSwitch` — one noise predictor made of two: ``inside`` answers for the timesteps
  in a window, ``outside`` for all others.  Any sampler takes it as its model.
* :func:`ddim_resume` — continue a stored deterministic DDIM run from its state at one
  timestep with another model.  Runs that share their first steps then share their cost: a
  switch at ``t = 499`` only pays for the steps below 499.
* :func:`fd_interval` and :func:`fd_comparison` — Fréchet distances of the samples of several
  seeds, with a 95% interval that covers the seeds (a t-interval) *and* both finite sets of
  the distance, the samples and the reference digits (a bootstrap that redraws both), in the
  form of :mod:`unet_edu.claims` (effect, interval, verdict).

A Fréchet distance is a *squared* distance between two Gaussians, so a ratio of 16 between two
of them is a ratio of 4 in distance; :attr:`FDInterval.distance_ratio` says which is meant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .claims import Comparison, interval
from .diffusion import NoiseSchedule, Trajectory, ddim_step
from .runtime import eval_mode

__all__ = ["TimeSwitch", "ddim_resume", "FDInterval", "fd_interval", "fd_comparison"]


def _window(window) -> tuple[int, int]:
    try:
        lo, hi = window
    except (TypeError, ValueError):
        raise ValueError(f"window must be two timesteps (first, last), both included, got "
                         f"{window!r}; e.g. (900, 999) for the first two steps of DDIM-20"
                         ) from None
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"window must hold two whole timesteps of at least 0, got "
                             f"{window!r}")
    if lo > hi:
        raise ValueError(f"window {window!r} runs backwards; give (first, last) with "
                         f"first <= last, e.g. ({hi}, {lo})")
    return int(lo), int(hi)


class TimeSwitch(nn.Module):
    """``inside(x_t, t)`` for ``t`` in ``window = (first, last)`` (both included),
    ``outside(x_t, t)`` for every other ``t``.

    The two networks must take the same inputs and give outputs of the same shape (two noise
    predictors of one task, e.g. a network told ``t`` and one that is not).  Each image of a
    batch goes to the network its own ``t`` selects, so the switch also works inside a
    training batch of mixed timesteps.  ``config`` is that of the time-conditioned member, so
    a sampler checks the schedule against it as it would against that network alone.
    """

    def __init__(self, outside: nn.Module, inside: nn.Module, window):
        super().__init__()
        for name, m in (("outside", outside), ("inside", inside)):
            if not isinstance(m, nn.Module):
                raise ValueError(f"TimeSwitch: {name} must be a network (torch.nn.Module), got "
                                 f"{type(m).__name__}")
        self.outside, self.inside = outside, inside
        self.window = _window(window)
        configs = [getattr(m, "config", {}) for m in (outside, inside)]
        for key in ("in_channels", "num_classes"):
            if not all(key in c for c in configs):
                continue
            a, b = (c[key] for c in configs)
            if a != b:
                raise ValueError(f"TimeSwitch: the two networks differ in {key} ({a} outside, "
                                 f"{b} inside); switch between networks of the same task")
        told = [c for c in configs if c.get("time_conditioning", True) and c]
        self.config = dict(told[0] if told else configs[0])

    def extra_repr(self) -> str:
        return f"inside for t in [{self.window[0]}, {self.window[1]}]"

    def forward(self, x: torch.Tensor, t: torch.Tensor,
                *args, **kwargs) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        lo, hi = self.window
        chosen = (t >= lo) & (t <= hi)
        if bool(chosen.all()):
            return self.inside(x, t, *args, **kwargs)
        if not bool(chosen.any()):
            return self.outside(x, t, *args, **kwargs)
        out = None
        for mask, net in ((chosen, self.inside), (~chosen, self.outside)):
            sub = [a[mask] if isinstance(a, torch.Tensor)
                   and a.shape[:1] == x.shape[:1] else a for a in args]
            part = net(x[mask], t[mask], *sub, **kwargs)
            if out is None:
                out = part.new_empty((x.shape[0], *part.shape[1:]))
            out[mask] = part
        return out


@torch.no_grad()
def ddim_resume(model, schedule: NoiseSchedule, run: Trajectory, t: int, *,
                clip_x0: bool = True) -> Trajectory:
    """Continue the deterministic DDIM run ``run`` from its state at timestep ``t`` with ``model``.

    ``run`` comes from ``ddim_sample(..., eta=0, return_trajectory=True)``; its state before
    the step at ``t`` (``run.xt[i]`` where ``run.timesteps[i] == t``) is taken as it is, and
    the remaining timesteps are walked with :func:`~unet_edu.diffusion.ddim_step`.  So
    ``ddim_resume(m, s, run, t)`` gives exactly the images of a ``ddim_sample`` whose model is
    the run's own above ``t`` and ``m`` from ``t`` on, at the cost of the steps from ``t`` on.
    Only deterministic runs can be resumed: a run with ``eta > 0`` drew noise at each step,
    which the trajectory does not keep.  Returns a :class:`~unet_edu.diffusion.Trajectory`
    whose lists hold the resumed steps.
    """
    if not isinstance(run, Trajectory) or not run.timesteps or len(run.xt) != len(
            run.timesteps) + 1:
        raise ValueError("ddim_resume needs a stored run: call ddim_sample(..., eta=0, "
                         "return_trajectory=True) and pass what it returned")
    if t not in run.timesteps:
        raise ValueError(f"ddim_resume: the run never visited t = {t!r}; resume at one of "
                         f"the timesteps it visited, {run.timesteps}")
    i = run.timesteps.index(t)
    steps = run.timesteps[i:]
    a_bars = schedule.alphas_cumprod
    param = next(model.parameters())
    x = run.xt[i].to(device=param.device, dtype=param.dtype)
    out = Trajectory(x=x, xt=[run.xt[i]])
    with eval_mode(model):
        for k, step in enumerate(steps):
            tt = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
            eps = model(x, tt)
            a_prev = a_bars[steps[k + 1]].item() if k + 1 < len(steps) else 1.0
            x, x0 = ddim_step(x, eps, a_bars[step].item(), a_prev, clip_x0=clip_x0)
            out.timesteps.append(step)
            out.xt.append(x.cpu())
            out.x0_pred.append(x0.cpu())
            out.eps_pred.append(eps.cpu())
    out.x = x
    return out


def _features(f, name: str) -> np.ndarray:
    arr = np.asarray(f.detach().cpu() if isinstance(f, torch.Tensor) else f, dtype=np.float64)
    if arr.ndim != 2 or len(arr) < 2:
        raise ValueError(f"{name} must be feature vectors of shape (N, D) with N >= 2, got "
                         f"shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite features; check the images they came "
                         f"from (a diverged sampler?)")
    return arr


def _stack(feats_by_seed, name: str) -> np.ndarray:
    """``(n_seeds, N, D)`` from a list of per-seed feature arrays of equal shape."""
    arrs = [_features(f, f"{name}[{k}]") for k, f in enumerate(feats_by_seed)]
    if len(arrs) < 2:
        raise ValueError(f"{name} must hold the features of at least 2 seeds' samples, got "
                         f"{len(arrs)}; an interval over seeds needs two")
    if len({a.shape for a in arrs}) != 1:
        raise ValueError(f"{name}: every seed needs the same number of samples, got shapes "
                         f"{[a.shape for a in arrs]}")
    return np.stack(arrs)


def _moments(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Means ``(..., D)`` and covariances ``(..., D, D)`` of sets ``(..., N, D)`` (divisor N - 1)."""
    mu = feats.mean(-2)
    centred = feats - mu.unsqueeze(-2)
    return mu, centred.transpose(-1, -2) @ centred / (feats.shape[-2] - 1)


def _sqrtm_psd(cov: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(cov)
    return (v * w.clamp(min=0).sqrt().unsqueeze(-2)) @ v.transpose(-1, -2)


def _batched_fd(mu, cov, mu_r, root_r, cov_r) -> torch.Tensor:
    """Fréchet distances of Gaussians ``(mu, cov)`` to ``(mu_r, cov_r)``, batched.

    The same formula as :func:`unet_edu.metrics.gaussian_frechet_distance`: the trace of
    ``(C C_r)^(1/2)`` is the sum of the square roots of the eigenvalues of ``S C S`` with
    ``S = C_r^(1/2)`` (``root_r``), a symmetric matrix, so the batched ``eigvalsh`` is stable.
    """
    inner = torch.linalg.eigvalsh(root_r @ cov @ root_r).clamp(min=0).sqrt().sum(-1)
    value = ((mu - mu_r) ** 2).sum(-1) + cov_r.diagonal(dim1=-2, dim2=-1).sum(-1) + \
        cov.diagonal(dim1=-2, dim2=-1).sum(-1) - 2 * inner
    return value.clamp(min=0)


def _boot_fds(sets: list[np.ndarray], ref: np.ndarray, n_boot: int, seed: int,
              chunk: int = 25):
    """Per-seed FDs of each ``(n_seeds, N, D)`` set, and the same for ``n_boot`` bootstrap
    redraws of the samples (one index draw for every seed and set: they share their starting
    noise) and of the reference (redrawn independently).  Arrays ``(n_seeds,)`` and
    ``(n_boot, n_seeds)``, computed in float64 in batches of ``chunk`` redraws."""
    rng = np.random.default_rng(seed)
    n, m = sets[0].shape[1], len(ref)
    ts = [torch.from_numpy(f) for f in sets]
    r = torch.from_numpy(ref)
    mu_r, cov_r = _moments(r)
    root_r = _sqrtm_psd(cov_r)
    direct = [_batched_fd(*_moments(f), mu_r, root_r, cov_r).numpy() for f in ts]
    boots = [np.empty((n_boot, f.shape[0])) for f in sets]
    for lo in range(0, n_boot, chunk):
        b = min(chunk, n_boot - lo)
        idx = torch.from_numpy(rng.integers(0, n, (b, n)))
        ridx = torch.from_numpy(rng.integers(0, m, (b, m)))
        mu_b, cov_b = _moments(r[ridx])  # (b, D), (b, D, D)
        root_b = _sqrtm_psd(cov_b)
        for k, f in enumerate(ts):
            mu, cov = _moments(f[:, idx])  # (seeds, b, D), (seeds, b, D, D)
            boots[k][lo:lo + b] = _batched_fd(mu, cov, mu_b, root_b, cov_b).T.numpy()
    return direct, boots


@dataclass(frozen=True)
class FDInterval:
    """The mean Fréchet distance of several seeds' samples, with its 95% interval.

    ``per_seed`` holds each seed's FD; ``low`` and ``high`` cover seed noise and the finite
    sample and reference sets (``se_seed`` and ``se_items``).
    """

    mean: float
    low: float
    high: float
    per_seed: tuple
    se_seed: float
    se_items: float
    n_samples: int
    n_reference: int

    def describe(self, digits: int = 0) -> str:
        """E.g. ``FD 959 [604, 1314] (95%, 3 seeds x 200 samples, 200 reference digits)``."""
        f = f"{{:.{digits}f}}"
        return (f"FD {f.format(self.mean)} [{f.format(self.low)}, {f.format(self.high)}] "
                f"(95%, {len(self.per_seed)} seeds x {self.n_samples} samples, "
                f"{self.n_reference} reference digits)")

    __str__ = describe


def fd_interval(feats_by_seed, reference, *, n_boot: int = 200, seed: int = 0) -> FDInterval:
    """Mean FD of each seed's samples to ``reference``, with a 95% interval.

    ``feats_by_seed`` holds one ``(N, D)`` feature array per seed (the same N for all);
    ``reference`` the features of the real digits.  The interval is
    :func:`unet_edu.claims.interval` of the mean, with the standard error over seeds and the
    bootstrap standard error of the seed-averaged FD when both the samples and the reference
    are redrawn.  An FD is never negative, so a lower end below 0 is cut at 0 (three seeds
    that disagree a lot give a wide interval).
    """
    sets = [_stack(feats_by_seed, "feats_by_seed")]
    ref = _features(reference, "reference")
    direct, boots = _boot_fds(sets, ref, n_boot, seed)
    per_seed = direct[0]
    k = len(per_seed)
    se_seed = float(per_seed.std(ddof=1) / math.sqrt(k))
    se_items = float(boots[0].mean(1).std(ddof=1))
    low, high = interval(float(per_seed.mean()), se_seed, se_items, k)
    low = max(low, 0.0)  # a Fréchet distance is never negative
    return FDInterval(float(per_seed.mean()), low, high, tuple(float(v) for v in per_seed),
                      se_seed, se_items, sets[0].shape[1], len(ref))


def fd_comparison(feats_a, feats_b, reference, *, margin: float | None = None,
                  relative: bool = True, n_boot: int = 200, seed: int = 0) -> Comparison:
    """Compare the samples of sampler ``b`` with those of sampler ``a`` by their FD to
    ``reference``: an effect, a 95% interval and a verdict (:class:`unet_edu.claims.Comparison`).

    ``feats_a`` and ``feats_b`` hold one ``(N, D)`` feature array per seed, seed ``k`` of both
    from the same networks' seed and the same starting noise (paired).  The effect is the
    ratio ``mean FD(b) / mean FD(a)`` (``relative=True``, on the log scale, as
    :func:`unet_edu.claims.compare` does) or the difference.  Its standard error adds the
    spread of the per-seed effects to a bootstrap that redraws the samples (the same indices
    for ``a`` and ``b``) and the reference.  ``margin`` (e.g. ``0.25`` for ±25% with
    ``relative``) is the equivalence margin the sentence states, fixed before looking.
    """
    a = _stack(feats_a, "feats_a")
    b = _stack(feats_b, "feats_b")
    if a.shape != b.shape:
        raise ValueError(f"fd_comparison pairs seed k of a with seed k of b: both need the "
                         f"same seeds and sample counts, got shapes {a.shape} and {b.shape}")
    if margin is not None and not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"fd_comparison: margin must be a positive number (or None), got "
                         f"{margin!r}")
    ref = _features(reference, "reference")
    (fa, fb), (ba, bb) = _boot_fds([a, b], ref, n_boot, seed)
    if relative and (min(fa.min(), fb.min(), ba.min(), bb.min()) <= 0):
        raise ValueError("fd_comparison: a Fréchet distance of 0 has no ratio; use "
                         "relative=False")

    def stat(x, y):
        return np.log(y / x) if relative else y - x

    k = a.shape[0]
    effect = float(stat(fa.mean(), fb.mean()))
    per_seed = stat(fa, fb)
    se_seed = float(per_seed.std(ddof=1) / math.sqrt(k))
    se_items = float(np.std(stat(ba.mean(1), bb.mean(1)), ddof=1))
    low, high = interval(effect, se_seed, se_items, k)
    null = 0.0
    if relative:
        effect, low, high, null = math.exp(effect), math.exp(low), math.exp(high), 1.0
    if low > null or high < null:
        verdict = "apart"
    elif margin is not None and null - margin < low and high < null + margin:
        verdict = "equivalent"
    else:
        verdict = "not resolved"
    return Comparison(effect, low, high, verdict, margin, relative, k, a.shape[1], se_seed,
                      se_items)
