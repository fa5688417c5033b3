"""The Gaussian-mixture toy of chapter 5: its exact quantities against Monte Carlo and finite
differences, its ODE solvers against DDIM and against each other, and its errors."""

import math

import pytest
import torch

from unet_edu import toy
from unet_edu.diffusion import NoiseSchedule

MIX = toy.GaussianMixture([-2.0, 0.5, 2.5], [0.3, 0.5, 0.25], [0.3, 0.4, 0.3])
MIX2 = toy.GaussianMixture([[-1.0, 1.0], [1.5, -0.5]], [0.4, 0.7], [0.6, 0.4])


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule("cosine")


@pytest.mark.parametrize("mix", [MIX, MIX2])
@pytest.mark.parametrize("a", [0.9, 0.3, 0.02])
def test_score_is_the_gradient_of_the_log_density(mix, a):
    x = torch.randn(50, mix.dim, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64) * 2
    h = 1e-5
    numeric = torch.stack([(mix.log_prob(x + h * e, a) - mix.log_prob(x - h * e, a)) / (2 * h)
                           for e in torch.eye(mix.dim, dtype=torch.float64)], dim=1)
    assert torch.allclose(mix.score(x, a), numeric, atol=1e-6)


@pytest.mark.parametrize("a", [0.8, 0.2])
def test_tweedie_links_posterior_mean_score_and_optimal_eps(a):
    x = torch.linspace(-4, 4, 81, dtype=torch.float64)[:, None]
    score = MIX.score(x, a)
    assert torch.allclose(MIX.posterior_mean(x, a), (x + (1 - a) * score) / math.sqrt(a),
                          atol=1e-12)
    assert torch.allclose(MIX.optimal_eps(x, a),
                          (x - math.sqrt(a) * MIX.posterior_mean(x, a)) / math.sqrt(1 - a),
                          atol=1e-12)


def test_posterior_mean_matches_monte_carlo():
    """E[x0 | x_t] against the average of x0 over draws whose x_t fell in a narrow bin."""
    g = torch.Generator().manual_seed(1)
    a = 0.5
    x0, _ = MIX.sample(400_000, g)
    xt = math.sqrt(a) * x0 + math.sqrt(1 - a) * torch.randn(x0.shape, generator=g,
                                                            dtype=torch.float64)
    for centre in (-1.0, 0.3, 1.2):
        inside = (xt[:, 0] - centre).abs() < 0.02
        mc = x0[inside, 0]
        exact = MIX.posterior_mean(torch.tensor([[centre]], dtype=torch.float64), a)[0, 0]
        assert abs(mc.mean() - exact) < 4 * mc.std() / math.sqrt(len(mc)) + 0.01


def test_optimal_eps_has_the_lowest_loss():
    """E[eps | x_t] beats any other predictor, e.g. itself perturbed, on Monte-Carlo draws."""
    g = torch.Generator().manual_seed(2)
    a = torch.rand(50_000, 1, generator=g, dtype=torch.float64) * 0.98 + 0.01
    x0, _ = MIX.sample(50_000, g)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    best = MIX.optimal_eps(xt, a)
    loss = ((best - eps) ** 2).mean()
    for other in (best * 0.95, best + 0.05, torch.zeros_like(best)):
        assert ((other - eps) ** 2).mean() > loss


def test_noisy_marginal_matches_samples(schedule):
    g = torch.Generator().manual_seed(3)
    a = schedule.alphas_cumprod[400].item()
    x0, _ = MIX.sample(20_000, g)
    xt = math.sqrt(a) * x0 + math.sqrt(1 - a) * torch.randn(x0.shape, generator=g,
                                                            dtype=torch.float64)
    exact, _ = MIX.sample(20_000, g)
    # the noised draws are as close to the exact noisy law as exact draws are to the data
    assert MIX.wasserstein(xt, a) < 0.05
    assert MIX.wasserstein(exact) < 0.05
    # and far from the law of another noise level, or from shifted data
    assert MIX.wasserstein(xt, schedule.alphas_cumprod[300].item()) > 0.08
    assert MIX.wasserstein(exact + 0.2) > 0.15


def test_ddim_converges_to_the_probability_flow_at_first_order(schedule):
    x_T = torch.randn(100, 1, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ode = toy.probability_flow(MIX, x_T, schedule.alphas_cumprod[-1].item(), 1.0)
    eps = lambda x, t: MIX.optimal_eps(x, schedule.alphas_cumprod[t].item())
    gaps = [(toy.sample(eps, schedule, x_T, steps=n) - ode).abs().mean().item()
            for n in (100, 200, 1000)]
    assert gaps[2] < 0.005
    assert 1.6 < gaps[0] / gaps[1] < 2.4  # halving the step halves the error


def test_flow_matching_is_the_same_ode(schedule):
    x_T = torch.randn(30, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a_T = schedule.alphas_cumprod[-1]
    ode = toy.probability_flow(MIX, x_T, a_T.item(), 1.0)
    sig = toy.sigma_of(a_T).item()
    tau = sig / (1 + sig)
    fm = toy.flow_matching_solve(MIX, x_T / a_T.sqrt() * (1 - tau), tau, 0.0)
    assert torch.isfinite(fm).all()
    assert (fm - ode).abs().max() < 1e-7


def test_trained_network_approaches_the_optimum(schedule):
    torch.manual_seed(0)
    net, history = toy.train_noise_predictor(MIX, schedule, steps=300, seed=0)
    g = torch.Generator().manual_seed(6)
    t = torch.randint(0, 1000, (4000,), generator=g)
    a = schedule.alphas_cumprod[t][:, None]
    x0, _ = MIX.sample(4000, g)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    with torch.no_grad():
        pred = net(xt.float(), t).double()
    best = ((MIX.optimal_eps(xt, a) - eps) ** 2).mean()
    assert ((pred - eps) ** 2).mean() < 1.15 * best  # an untrained net is near 1.0
    assert best < 0.8


@pytest.mark.parametrize("kwargs, match", [
    (dict(means=[0.0, 1.0], stds=[1.0]), "same 2 components"),
    (dict(means=[0.0, 1.0], stds=[1.0, 0.0]), "positive"),
    (dict(means=[0.0, float("nan")], stds=[1.0, 1.0]), "finite"),
])
def test_bad_mixtures_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        toy.GaussianMixture(**kwargs)


def test_bad_inputs_name_the_value_and_the_fix(schedule):
    with pytest.raises(ValueError, match="alpha_bar must lie in"):
        MIX.score(torch.zeros(3, 1), 0.0)
    with pytest.raises(ValueError, match=r"shape \(N, 1\)"):
        MIX.score(torch.zeros(3, 2), 0.5)
    with pytest.raises(ValueError, match="component must be one of 0..2"):
        MIX.score(torch.zeros(3, 1), 0.5, component=3)
    with pytest.raises(ValueError, match="noise to data"):
        toy.probability_flow(MIX, torch.zeros(3, 1), 0.9, 0.1)
    with pytest.raises(ValueError, match="tau_end < tau_start"):
        toy.flow_matching_solve(MIX, torch.zeros(3, 1), 0.2, 0.5)
    with pytest.raises(ValueError, match="steps="):
        toy.sample(lambda x, t: x, schedule, torch.zeros(3, 1))
    with pytest.raises(ValueError, match="eta must lie"):
        toy.sample(lambda x, t: x, schedule, torch.zeros(3, 1), steps=5, eta=2.0)
    with pytest.raises(ValueError, match="n must be a whole number"):
        MIX.sample(0)
