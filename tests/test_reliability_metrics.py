"""Bad inputs to the Fréchet distance tools are clear errors, not quiet numbers."""

import numpy as np
import pytest
import torch

from unet_edu.diffusion import NoiseSchedule
from unet_edu.metrics import (DigitClassifier, classifier_features, evaluate_sampler,
                              frechet_distance)
from unet_edu.models import DiffusionUNet


@pytest.fixture(scope="module")
def clf():
    torch.manual_seed(0)
    return DigitClassifier(width=4, feature_dim=8).eval()


@pytest.mark.parametrize("value_range", [(0, 0), (1, -1), (0, float("inf")), (0,)])
def test_degenerate_value_range_is_refused(clf, value_range):
    with pytest.raises(ValueError, match=r"value_range must be two"):
        classifier_features(clf, torch.rand(2, 1, 28, 28), value_range=value_range)


def test_images_must_be_digits(clf):
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\), got \(2, 28, 28\).*images\[:, None\]"):
        classifier_features(clf, torch.rand(2, 28, 28))
    with pytest.raises(ValueError, match=r"got 0 images"):
        classifier_features(clf, torch.rand(0, 1, 28, 28))


def test_non_finite_features_are_refused():
    a = np.random.default_rng(0).normal(size=(10, 3))
    b = a.copy()
    b[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"features contain 1 NaN"):
        frechet_distance(a, b)


def test_evaluate_sampler_explains_why_a_model_cannot_make_digits(clf):
    deep = DiffusionUNet(base_channels=4, channel_mult=(1, 1, 1, 1), num_res_blocks=1,
                         attention_levels=(), norm_groups=2, num_classes=10, num_timesteps=10)
    real = torch.randn(10, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"draws 28x28 digits .*4 levels .*divisible by 8.*"
                                         r"len\(channel_mult\) <= 3"):
        evaluate_sampler(deep, NoiseSchedule("linear", 10), clf, real, n=10, steps=2)
    with pytest.raises(ValueError, match=r"steps must be a whole number of at least 1, got 2.5"):
        evaluate_sampler(deep, NoiseSchedule("linear", 10), clf, real, n=10, steps=2.5)
