"""The Fréchet distance and the digit classifier's feature extractor."""

import numpy as np
import pytest
import torch
from scipy import linalg

from unet_edu.metrics import (DigitClassifier, classifier_features, feature_statistics, frechet_distance,
                              gaussian_frechet_distance)


def _gaussian(n, mean, cov, seed):
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(mean, cov, size=n)


def test_same_set_is_zero():
    a = _gaussian(500, np.zeros(5), np.eye(5), 0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_shift_increases_distance():
    a = _gaussian(2000, np.zeros(4), np.eye(4), 1)
    b = _gaussian(2000, np.zeros(4), np.eye(4), 2)
    near = frechet_distance(a, b)
    far = frechet_distance(a, b + 1.0)
    farther = frechet_distance(a, b + 2.0)
    assert near < far < farther
    # A shift by s in every one of 4 dimensions adds about 4 s^2.
    assert far - near == pytest.approx(4.0, rel=0.1)


def test_matches_closed_form_for_gaussians():
    # Diagonal covariances commute: FD = |m1 - m2|^2 + sum (sqrt(s1) - sqrt(s2))^2.
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = ((m1 - m2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert gaussian_frechet_distance(m1, np.diag(s1), m2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_agrees_with_sqrtm_for_full_covariances():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    c1, c2 = a @ a.T + np.eye(6), b @ b.T + np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * np.real(linalg.sqrtm(c1 @ c2)))
    assert gaussian_frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-8)


def test_singular_covariance_stays_finite():
    a = _gaussian(300, np.zeros(3), np.eye(3), 4)
    a[:, 2] = 0.0  # a feature that is always zero (a dead ReLU unit)
    b = _gaussian(300, np.zeros(3), np.eye(3), 5)
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value > 0


def test_statistics_and_shape_errors():
    mu, cov = feature_statistics(torch.ones(10, 3))
    assert mu.shape == (3,) and cov.shape == (3, 3)
    with pytest.raises(ValueError):
        feature_statistics(np.ones(5))
    with pytest.raises(ValueError):
        gaussian_frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_classifier_features_shapes_and_range_mapping():
    torch.manual_seed(0)
    clf = DigitClassifier().eval()
    x01 = torch.rand(7, 1, 28, 28)
    f, pred = classifier_features(clf, x01, batch_size=3)
    assert f.shape == (7, clf.config["feature_dim"]) and f.dtype == torch.float64
    assert pred.shape == (7,) and pred.dtype == torch.int64
    f2, _ = classifier_features(clf, x01 * 2 - 1, value_range=(-1, 1))
    assert torch.allclose(f, f2, atol=1e-5)
