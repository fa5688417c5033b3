"""eval_mode, the samplers' pure update steps, and the trimmed public surface."""

import math

import pytest
import torch
from torch import nn

import unet_edu.diffusion as diffusion
from unet_edu.diffusion import NoiseSchedule, ddim_step, ddpm_step
from unet_edu.metrics import DigitClassifier, classifier_features
from unet_edu.runtime import eval_mode


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_restores_the_previous_mode_also_after_an_error(training):
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train(training)
    with eval_mode(model) as m:
        assert m is model and not model.training and not model[1].training
    assert model.training == training and model[1].training == training
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(model):
            raise RuntimeError("boom")
    assert model.training == training


def test_classifier_features_leaves_a_training_classifier_training():
    clf = DigitClassifier(width=4, feature_dim=8).train()
    feats, preds = classifier_features(clf, torch.rand(3, 1, 28, 28))
    assert clf.training and feats.shape == (3, 8) and preds.shape == (3,)


def _schedule_values(step):
    s = NoiseSchedule("linear", 100)
    return s, s.alphas_cumprod[step].item(), s.alphas_cumprod_prev[step].item(), s.betas[step].item()


def test_ddpm_step_recovers_x0_and_matches_the_eps_form_of_the_mean():
    s, a_bar, a_prev, beta = _schedule_values(40)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(2, 1, 4, 4, generator=g) - 0.5, torch.randn(2, 1, 4, 4, generator=g)
    x_t = math.sqrt(a_bar) * x0 + math.sqrt(1 - a_bar) * eps
    mean, x0_hat = ddpm_step(x_t, eps, a_bar, a_prev, beta, noise=None, clip_x0=False)
    torch.testing.assert_close(x0_hat, x0)
    # The same mean written with the noise (Algorithm 2 of the DDPM paper).
    eps_form = (x_t - beta / math.sqrt(1 - a_bar) * eps) / math.sqrt(1 - beta)
    torch.testing.assert_close(mean, eps_form)
    noise = torch.randn(2, 1, 4, 4, generator=g)
    sample, _ = ddpm_step(x_t, eps, a_bar, a_prev, beta, noise=noise, clip_x0=False)
    var = s.posterior_variance[40].item()
    torch.testing.assert_close(sample, mean + math.sqrt(var) * noise)


def test_ddpm_step_clips_x0():
    _, a_bar, a_prev, beta = _schedule_values(90)
    _, x0 = ddpm_step(torch.full((1, 1, 2, 2), 5.0), torch.zeros(1, 1, 2, 2), a_bar, a_prev, beta)
    assert x0.max() == 1.0


def test_ddim_step_with_the_true_noise_lands_on_the_forward_process():
    s = NoiseSchedule("cosine", 50)
    a, a_prev = s.alphas_cumprod[30].item(), s.alphas_cumprod[10].item()
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.rand(3, 1, 4, 4, generator=g) - 0.5, torch.randn(3, 1, 4, 4, generator=g)
    x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
    x_prev, x0_hat = ddim_step(x_t, eps, a, a_prev, eta=0.0)
    torch.testing.assert_close(x0_hat, x0)
    torch.testing.assert_close(x_prev, math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps)


def test_ddim_step_eta_one_adds_the_ddpm_posterior_variance():
    s = NoiseSchedule("linear", 100)
    a, a_prev = s.alphas_cumprod[40].item(), s.alphas_cumprod[39].item()
    x_t, eps, noise = torch.randn(3, 1, 4, 4).unbind(0)
    quiet, _ = ddim_step(x_t, eps, a, a_prev, eta=1.0, noise=torch.zeros_like(noise), clip_x0=False)
    noisy, _ = ddim_step(x_t, eps, a, a_prev, eta=1.0, noise=noise, clip_x0=False)
    sigma = ((noisy - quiet) / noise).mean().item()
    assert math.isclose(sigma**2, s.posterior_variance[40].item(), rel_tol=1e-4)
    with pytest.raises(ValueError, match="needs noise"):
        ddim_step(x_t, eps, a, a_prev, eta=0.5)


def test_steps_are_public_and_dead_code_is_gone():
    import unet_edu.viz as viz
    from unet_edu.models import DiffusionUNet

    assert {"ddpm_step", "ddim_step"} <= set(diffusion.__all__)
    assert not hasattr(viz, "feature_map_grid")
    assert "batch" not in DiffusionUNet.embed.__code__.co_varnames


def test_gate_explorer_is_in_the_lazy_table():
    import unet_edu.widgets as widgets
    from unet_edu.widgets.gates import GateExplorer

    assert "GateExplorer" in widgets.__all__ and widgets.GateExplorer is GateExplorer
