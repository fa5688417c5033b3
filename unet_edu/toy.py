"""A diffusion model whose every quantity is known exactly: data from a Gaussian mixture.

With digits nobody knows the true score or the best possible denoiser, so a claim such as "the
network predicts E[x0 | x_t]" cannot be checked on them.  For data drawn from a mixture of
Gaussians it can.  Let ``x0 ~ sum_k w_k N(mu_k, s_k^2 I)`` in ``d`` dimensions and noise it
with the book's forward process ``x_t = sqrt(a) x0 + sqrt(1 - a) eps`` (``a = alpha_bar_t``).
Each component stays Gaussian, so the noisy marginal is again a mixture::

    q_t(x) = sum_k w_k N(x; sqrt(a) mu_k, v_k I),      v_k = a s_k^2 + 1 - a,

and everything the chapter derives has a closed form:

* :meth:`GaussianMixture.score` — ``grad log q_t(x)``, the *score*;
* :meth:`GaussianMixture.posterior_mean` — ``E[x0 | x_t]``, the best possible (least-squares)
  clean-image estimate, from Bayes' rule component by component;
* :meth:`GaussianMixture.optimal_eps` — ``E[eps | x_t] = -sqrt(1 - a) * score``, the noise
  prediction that minimises the training loss (Tweedie's formula links the three);
* ``component=k`` gives the same for one component alone, which plays the part of a class
  (for classifier-free guidance).

On top of that the module has the pieces the chapter compares:

* :func:`probability_flow` — an accurate solution of the probability-flow ODE (DDIM's ODE)
  with :func:`scipy.integrate.solve_ivp`, written in DDIM's own variables
  ``xbar = x / sqrt(a)`` and ``sigma = sqrt((1 - a) / a)``, where it reads
  ``d xbar / d sigma = eps(x, sigma)``;
* :func:`flow_matching_solve` — the same data's flow-matching ODE on the straight path
  ``x_tau = (1 - tau) x0 + tau eps``, with its exact velocity;
* :func:`sample` — DDPM or DDIM (any ``eta``, any steps) with any noise predictor, using the
  package's own :func:`~unet_edu.diffusion.ddpm_step` and :func:`~unet_edu.diffusion.ddim_step`
  without clipping;
* :class:`NoisePredictorMLP` and :func:`train_noise_predictor` — a small network trained with
  the book's :func:`~unet_edu.diffusion.diffusion_loss` in seconds on a CPU, to compare with
  the exact answers.

All arithmetic of the exact quantities is in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .blocks import SinusoidalTimeEmbedding
from .diffusion import NoiseSchedule, ddim_step, ddim_timesteps, ddpm_step, diffusion_loss
from .models.config import RecordsConfig

__all__ = ["GaussianMixture", "probability_flow", "flow_matching_solve", "sample",
           "NoisePredictorMLP", "train_noise_predictor", "sigma_of", "alpha_bar_of"]


def sigma_of(a_bar):
    """DDIM's noise-to-signal ratio ``sigma = sqrt((1 - a) / a)`` of ``a = alpha_bar``."""
    a = torch.as_tensor(a_bar, dtype=torch.float64)
    return ((1 - a) / a).sqrt()


def alpha_bar_of(sigma):
    """The inverse of :func:`sigma_of`: ``alpha_bar = 1 / (1 + sigma^2)``."""
    s = torch.as_tensor(sigma, dtype=torch.float64)
    return 1 / (1 + s**2)


def _check_a(a_bar, where: str) -> torch.Tensor:
    a = torch.as_tensor(a_bar, dtype=torch.float64)
    if not torch.isfinite(a).all() or (a <= 0).any() or (a > 1).any():
        raise ValueError(f"{where}: alpha_bar must lie in (0, 1], got {a_bar!r}; pass "
                         f"schedule.alphas_cumprod[t] for a timestep t")
    return a


class GaussianMixture:
    """``sum_k w_k N(mu_k, s_k^2 I)``: ``means`` ``(K, d)`` (or ``(K,)`` for ``d = 1``),
    ``stds`` ``(K,)`` positive, ``weights`` ``(K,)`` positive (normalised here).

    Points are tensors of shape ``(N, d)``; ``a_bar`` is a number or a tensor that broadcasts
    against ``(N, 1)`` (one value per point is ``(N, 1)``).
    """

    def __init__(self, means, stds, weights=None):
        mu = torch.as_tensor(means, dtype=torch.float64)
        if mu.dim() == 1:
            mu = mu[:, None]
        s = torch.as_tensor(stds, dtype=torch.float64).flatten()
        w = (torch.ones(len(mu), dtype=torch.float64) if weights is None
             else torch.as_tensor(weights, dtype=torch.float64).flatten())
        if mu.dim() != 2 or len(mu) == 0:
            raise ValueError(f"means must be (K, d) or (K,), got shape {tuple(mu.shape)}")
        if len(s) != len(mu) or len(w) != len(mu):
            raise ValueError(f"means, stds and weights must describe the same {len(mu)} "
                             f"components, got {len(s)} stds and {len(w)} weights")
        if not (torch.isfinite(mu).all() and torch.isfinite(s).all() and torch.isfinite(w).all()):
            raise ValueError("means, stds and weights must be finite numbers")
        if (s <= 0).any() or (w <= 0).any():
            raise ValueError(f"stds and weights must be positive, got stds {s.tolist()} and "
                             f"weights {w.tolist()}; drop a component instead of giving it 0")
        self.means, self.stds, self.weights = mu, s, w / w.sum()

    def __repr__(self) -> str:
        return (f"GaussianMixture({len(self.means)} components in {self.dim} dimension"
                f"{'s' if self.dim > 1 else ''})")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return len(self.means)

    def sample(self, n: int, generator=None, component: int | None = None):
        """``(x0, k)``: ``n`` points ``(n, d)`` and the component each came from."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a whole number of at least 1, got {n!r}")
        if component is None:
            k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        else:
            k = torch.full((n,), self._component(component), dtype=torch.long)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * z, k

    def _component(self, k) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.num_components:
            raise ValueError(f"component must be one of 0..{self.num_components - 1}, got {k!r}")
        return k

    def _terms(self, x, a_bar, component):
        """Per-component log densities ``(N, K)``, centred points ``(N, K, d)``, variances."""
        x = self._points(x)
        a = _check_a(a_bar, "GaussianMixture")
        a = a.reshape(-1, 1, 1) if a.dim() else a
        v = a * self.stds[None, :, None] ** 2 + 1 - a  # (N or 1, K, 1)
        diff = x[:, None, :] - a.sqrt() * self.means[None]  # (N, K, d)
        logp = (self.weights.log()[None] - 0.5 * self.dim * torch.log(2 * math.pi * v[..., 0])
                - 0.5 * (diff**2).sum(-1) / v[..., 0])
        if component is not None:
            keep = torch.full((self.num_components,), -math.inf, dtype=torch.float64)
            keep[self._component(component)] = 0.0
            logp = logp + keep - self.weights.log()  # that component alone, weight 1
        return logp, diff, v, a

    def _points(self, x) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.dim() == 1 and self.dim == 1:
            x = x[:, None]
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"points must have shape (N, {self.dim}), got {tuple(x.shape)}")
        return x

    def log_prob(self, x, a_bar=1.0, component: int | None = None) -> torch.Tensor:
        """``log q_t(x)`` at ``alpha_bar_t = a_bar`` (``a_bar = 1``: the data itself)."""
        logp, *_ = self._terms(x, a_bar, component)
        return torch.logsumexp(logp, dim=1)

    def cdf(self, x, a_bar=1.0) -> torch.Tensor:
        """``P(X_t <= x)`` for a one-dimensional mixture, at ``alpha_bar_t = a_bar``."""
        if self.dim != 1:
            raise ValueError(f"cdf is defined for one-dimensional mixtures; this one has "
                             f"{self.dim} dimensions")
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, 1)
        a = float(_check_a(a_bar, "cdf"))
        sd = (a * self.stds**2 + 1 - a).sqrt()
        z = (x - math.sqrt(a) * self.means[:, 0]) / sd
        return (self.weights * 0.5 * torch.erfc(-z / math.sqrt(2))).sum(1)

    def wasserstein(self, samples, a_bar=1.0, grid: int = 20001) -> float:
        """The 1-Wasserstein distance between the empirical distribution of one-dimensional
        ``samples`` and the mixture at ``a_bar``: the area between the two cumulative
        distribution functions, integrated on ``grid`` points.  Even exact samples give more
        than 0: a distance of order ``1 / sqrt(n)`` for ``n`` of them, which varies from draw
        to draw, so compare a sampler with exact samples of the same size."""
        x = torch.as_tensor(samples, dtype=torch.float64).flatten().sort().values
        if len(x) == 0 or not torch.isfinite(x).all():
            raise ValueError("wasserstein needs finite samples, at least one")
        a = float(_check_a(a_bar, "wasserstein"))
        spread = math.sqrt(a * float((self.stds**2).max()) + 1 - a)
        lo = min(float(x[0]), math.sqrt(a) * float(self.means.min()) - 8 * spread)
        hi = max(float(x[-1]), math.sqrt(a) * float(self.means.max()) + 8 * spread)
        u = torch.linspace(lo, hi, grid, dtype=torch.float64)
        empirical = torch.searchsorted(x, u, right=True).double() / len(x)
        gap = (empirical - self.cdf(u, a)).abs()
        return float(torch.trapezoid(gap, u))

    def responsibilities(self, x, a_bar) -> torch.Tensor:
        """``q(k | x_t)`` ``(N, K)``: how likely each component is to have produced ``x_t``."""
        logp, *_ = self._terms(x, a_bar, None)
        return torch.softmax(logp, dim=1)

    def score(self, x, a_bar, component: int | None = None) -> torch.Tensor:
        """``grad_x log q_t(x)`` ``(N, d)``, exactly."""
        logp, diff, v, _ = self._terms(x, a_bar, component)
        r = torch.softmax(logp, dim=1)
        return -(r[..., None] * diff / v).sum(1)

    def posterior_mean(self, x, a_bar, component: int | None = None) -> torch.Tensor:
        """``E[x0 | x_t = x]`` ``(N, d)``: each component's Gaussian posterior mean,
        ``mu_k + sqrt(a) s_k^2 / v_k (x - sqrt(a) mu_k)``, weighted by its responsibility."""
        logp, diff, v, a = self._terms(x, a_bar, component)
        r = torch.softmax(logp, dim=1)
        per = self.means[None] + a.sqrt() * self.stds[None, :, None] ** 2 / v * diff
        return (r[..., None] * per).sum(1)

    def optimal_eps(self, x, a_bar, component: int | None = None) -> torch.Tensor:
        """``E[eps | x_t = x] = (x - sqrt(a) E[x0 | x]) / sqrt(1 - a)``: the noise prediction
        with the lowest possible training loss (equal to ``-sqrt(1 - a) * score``)."""
        a = _check_a(a_bar, "optimal_eps")
        a = a.reshape(-1, 1) if a.dim() else a
        # -sqrt(1 - a) * score: the same number, and finite at a = 1 (no noise), where the
        # other form divides 0 by 0.
        return -(1 - a).sqrt() * self.score(x, a_bar, component)


def probability_flow(mixture: GaussianMixture, x_start, a_start: float, a_end: float = 1.0, *,
                     eps_fn=None, rtol: float = 1e-10, atol: float = 1e-10) -> torch.Tensor:
    """Solve the probability-flow ODE from ``alpha_bar = a_start`` to ``a_end`` accurately.

    In DDIM's variables ``xbar = x / sqrt(a)`` and ``sigma = sqrt((1 - a) / a)`` the ODE is
    ``d xbar / d sigma = eps*(x, a)`` with the exact noise prediction (``eps_fn(x, a)``
    replaces it, e.g. for guidance).  It is integrated in ``log(1 + sigma)`` (smooth at both
    ends) by :func:`scipy.integrate.solve_ivp` (an explicit Runge-Kutta method of order 8,
    DOP853) to the given tolerances; returns ``x`` at ``a_end`` (``a_end = 1``: the data).
    """
    from scipy.integrate import solve_ivp

    x = mixture._points(x_start)
    a0, a1 = float(_check_a(a_start, "probability_flow")), float(_check_a(a_end, "probability_flow"))
    if a1 < a0:
        raise ValueError(f"probability_flow runs from noise to data: a_end ({a1}) must be at "
                         f"least a_start ({a0})")
    eps_fn = eps_fn or mixture.optimal_eps
    shape = x.shape
    s0, s1 = float(sigma_of(a0)), float(sigma_of(a1))

    def rhs(u, y):
        sigma = math.expm1(u)
        a = 1.0 / (1.0 + sigma * sigma)
        xt = torch.from_numpy(y).reshape(shape) * math.sqrt(a)
        eps = eps_fn(xt, a)
        return (eps.numpy() * (1.0 + sigma)).ravel()  # d xbar/du = (1 + sigma) eps

    xbar = (x / math.sqrt(a0)).numpy().ravel()
    sol = solve_ivp(rhs, (math.log1p(s0), math.log1p(s1)), xbar, method="DOP853",
                    rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"probability_flow: the ODE solver failed ({sol.message}); loosen "
                           f"rtol/atol")
    return torch.from_numpy(sol.y[:, -1]).reshape(shape) * math.sqrt(a1)


def flow_matching_solve(mixture: GaussianMixture, x_start, tau_start: float,
                        tau_end: float = 0.0, *, rtol: float = 1e-10,
                        atol: float = 1e-10) -> torch.Tensor:
    """Solve the flow-matching ODE ``dx/dtau = v*(x, tau)`` of the straight path
    ``x_tau = (1 - tau) x0 + tau eps`` (``tau = 1``: noise, ``tau = 0``: data).

    The exact velocity is ``v* = E[eps - x0 | x_tau]``.  Because ``x_tau / (1 - tau) = x0 +
    sigma eps`` with ``sigma = tau / (1 - tau)``, ``x_tau`` is the book's ``x_t`` rescaled, at
    ``alpha_bar = 1 / (1 + sigma^2)``, and ``E[eps | x_tau]`` comes from
    :meth:`GaussianMixture.optimal_eps` there; with ``x0 = (x - tau eps) / (1 - tau)`` the
    velocity is ``(E[eps | x] - x) / (1 - tau)``, finite at both ends.  Integrated in ``tau``
    with DOP853.
    """
    from scipy.integrate import solve_ivp

    if not 0 <= tau_end < tau_start < 1:
        raise ValueError(f"flow_matching_solve needs 0 <= tau_end < tau_start < 1, got "
                         f"tau_start={tau_start!r}, tau_end={tau_end!r}")
    x = mixture._points(x_start)
    shape = x.shape

    def rhs(tau, y):
        xt = torch.from_numpy(y).reshape(shape)
        # The same point in the book's variables: x_vp = x_tau / sqrt((1 - tau)^2 + tau^2)
        # at alpha_bar = (1 - tau)^2 / ((1 - tau)^2 + tau^2).
        norm = math.hypot(1 - tau, tau)
        a = ((1 - tau) / norm) ** 2
        eps = mixture.optimal_eps(xt / norm, a)
        # x0 = (x - tau eps) / (1 - tau), so v = eps - x0 = (eps - x) / (1 - tau): no
        # division by tau, which would be 0 / 0 at the data end (tau = 0).
        return ((eps - xt) / (1 - tau)).numpy().ravel()

    sol = solve_ivp(rhs, (tau_start, tau_end), x.numpy().ravel(), method="DOP853",
                    rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"flow_matching_solve: the ODE solver failed ({sol.message})")
    return torch.from_numpy(sol.y[:, -1]).reshape(shape)


@torch.no_grad()
def sample(eps_fn, schedule: NoiseSchedule, x_start: torch.Tensor, *, sampler: str = "ddim",
           steps: int | None = None, eta: float = 0.0, spacing: str = "trailing",
           generator=None, clip: float | None = None, return_path: bool = False):
    """Run DDPM or DDIM from ``x_start`` (noise at ``t = T - 1``) with a noise predictor.

    ``eps_fn(x_t, t)`` returns the predicted noise for a batch at the integer timestep ``t``
    (a trained network, or the exact ``mixture.optimal_eps`` at ``alphas_cumprod[t]``).  The
    steps are the package's :func:`~unet_edu.diffusion.ddpm_step` and
    :func:`~unet_edu.diffusion.ddim_step`.  ``clip`` bounds the clean estimate to
    ``[-clip, clip]`` as the digit samplers bound theirs to [-1, 1] (DDIM then recomputes the
    noise from it, as :func:`~unet_edu.diffusion.ddim_step` does); ``None`` does not clip.
    ``sampler="ddpm"`` visits all ``T`` steps; ``"ddim"`` visits ``steps`` of them
    (:func:`~unet_edu.diffusion.ddim_timesteps`) with noise ``eta``.  Returns the samples, or
    with ``return_path`` also the list of ``(t, x_t)`` visited.
    """
    if sampler not in ("ddim", "ddpm"):
        raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must lie in [0, 1], got {eta!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be a positive bound (or None), got {clip!r}")
    a_bars = schedule.alphas_cumprod
    x = x_start.clone()

    def predict(x, t):
        eps = eps_fn(x, t)
        if clip is None:
            return eps
        a = a_bars[t].item()  # clip x0 = (x - sqrt(1 - a) eps) / sqrt(a), keep eps consistent
        x0 = ((x - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-clip, clip)
        return (x - math.sqrt(a) * x0) / math.sqrt(1 - a)

    path = [(schedule.num_steps - 1, x.clone())]
    if sampler == "ddpm":
        for t in range(schedule.num_steps - 1, -1, -1):
            noise = (torch.randn(x.shape, generator=generator, dtype=x.dtype) if t > 0
                     else None)
            x, _ = ddpm_step(x, predict(x, t), a_bars[t].item(),
                             schedule.alphas_cumprod_prev[t].item(), schedule.betas[t].item(),
                             noise, clip_x0=False)
            path.append((t - 1, x.clone()))
    else:
        if steps is None:
            raise ValueError("sample: DDIM needs steps=, e.g. steps=20")
        ts = ddim_timesteps(schedule.num_steps, steps, spacing)
        for i, t in enumerate(ts):
            last = i + 1 == len(ts)
            a_prev = 1.0 if last else a_bars[ts[i + 1]].item()
            noise = (torch.randn(x.shape, generator=generator, dtype=x.dtype)
                     if eta > 0 and not last else None)
            x, _ = ddim_step(x, predict(x, t), a_bars[t].item(), a_prev, eta, noise,
                             clip_x0=False)
            path.append((-1 if last else ts[i + 1], x.clone()))
    return (x, path) if return_path else x


class NoisePredictorMLP(RecordsConfig, nn.Module):
    """A small noise predictor for points in ``dim`` dimensions: ``eps(x_t, t)``.

    The timestep goes through the book's :class:`~unet_edu.blocks.SinusoidalTimeEmbedding`
    (``time_dim`` sines and cosines), is concatenated with ``x_t`` and passed through
    ``depth`` hidden layers of ``width`` units with SiLU.  ``num_timesteps`` is recorded in
    ``config`` so that :func:`~unet_edu.diffusion.diffusion_loss` can check the schedule.
    """

    def __init__(self, dim: int = 1, width: int = 128, depth: int = 3, time_dim: int = 32,
                 num_timesteps: int = 1000):
        super().__init__()
        if dim < 1 or width < 1 or depth < 1 or time_dim < 2:
            raise ValueError(f"dim, width and depth must be at least 1 and time_dim at least "
                             f"2, got {dim}, {width}, {depth}, {time_dim}")
        self.time = SinusoidalTimeEmbedding(time_dim)
        layers, width_in = [], dim + time_dim
        for _ in range(depth):
            layers += [nn.Linear(width_in, width), nn.SiLU()]
            width_in = width
        self.net = nn.Sequential(*layers, nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # Divide t by the schedule's length / 1000: the embedding's fastest wave then turns
        # once per radian of t on the book's 1,000-step schedule, as in the U-Net.
        emb = self.time(t.float() * (1000 / self.config["num_timesteps"]))
        return self.net(torch.cat([x, emb], dim=1))


def train_noise_predictor(mixture: GaussianMixture, schedule: NoiseSchedule, *,
                          steps: int = 3000, n_data: int = 20000, batch_size: int = 512,
                          lr: float = 2e-3, seed: int = 0, model: nn.Module | None = None):
    """Train a :class:`NoisePredictorMLP` with the book's loss on ``n_data`` points of
    ``mixture``; returns ``(model, history)``.

    The loop is :func:`unet_edu.train.fit` with :func:`~unet_edu.diffusion.diffusion_loss`
    (uniform ``t``, MSE on the noise), the learning rate divided by 10 for the last quarter
    of the steps so that the loss settles.  A few seconds on one CPU core.
    """
    from .train import fit

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x0, _ = mixture.sample(n_data, gen)
    model = model or NoisePredictorMLP(mixture.dim, num_timesteps=schedule.num_steps)
    history = fit(model, lambda m, batch, g: diffusion_loss(m, schedule, batch[0], generator=g),
                  x0.float(), steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                  progress=False, lr_drop_at=0.75)
    return model.eval(), history
