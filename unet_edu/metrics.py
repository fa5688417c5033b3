"""How good are generated digits?  A Fréchet distance in the feature space of a digit classifier.

The Fréchet distance between two Gaussians ``N(m1, C1)`` and ``N(m2, C2)`` is::

    FD = |m1 - m2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))

FID (Heusel et al., 2017) fits one Gaussian to the Inception-v3 features of real images and
one to those of generated images and reports this distance.  Inception is far too large for
28x28 digits, so the book uses :class:`DigitClassifier`, a small CNN trained on MNIST, and its
64-dimensional penultimate layer as the feature space: the numbers are *not* comparable with
published FID values, only with each other (same classifier, same sample sizes).

* :func:`frechet_distance` — the distance between two sets of feature vectors;
* :func:`gaussian_frechet_distance` — the same from means and covariances;
* :class:`DigitClassifier` — the classifier; :func:`classifier_features` runs it in batches;
* :func:`frechet_distance_spread` — how much the FD would move with another draw of samples
  (bootstrap standard deviation);
* :func:`within_class_variety` — how different the digits of one class are from each other;
* :func:`evaluate_sampler` — draw class-balanced samples with a sampler and score them (FD
  against real features and its spread, how often the classifier names the requested digit,
  within-class variety, wall time).

The trained classifier ships with the package: ``unet_edu.pretrained.load("digit-classifier")``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import linalg
from torch import nn

from .models.config import RecordsConfig
from .runtime import eval_mode

__all__ = ["DigitClassifier", "frechet_distance", "gaussian_frechet_distance", "classifier_features",
           "feature_statistics", "frechet_distance_spread", "within_class_variety",
           "evaluate_sampler", "SamplerScore"]


class DigitClassifier(RecordsConfig, nn.Module):
    """A small CNN for 28x28 digits in [0, 1]: three conv stages, a 64-d feature layer, 10 logits.

    ``features(x)`` returns the 64-dimensional vector (after ReLU) that the Fréchet distance
    uses; ``forward(x)`` returns the logits.
    """

    def __init__(self, width: int = 32, feature_dim: int = 64, num_classes: int = 10):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),          # 14x14
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(2 * w, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _check_value_range(value_range) -> tuple[float, float]:
    """``(lo, hi)``: two finite numbers with ``lo < hi``; images are mapped from it to [0, 1]."""
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError) as err:
        raise ValueError(f"value_range must be two numbers (lo, hi), got {value_range!r}") from err
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise ValueError(f"value_range must be two finite numbers with lo < hi, got "
                         f"{value_range!r}; use (0, 1) for images in [0, 1] and (-1, 1) for "
                         f"raw diffusion samples")
    return lo, hi


@torch.no_grad()
def classifier_features(classifier: DigitClassifier, images: torch.Tensor, batch_size: int = 500,
                        value_range=(0.0, 1.0)):
    """Features and predicted labels of ``images`` ``(N, 1, 28, 28)``, as CPU float64 / int64.

    ``value_range`` is the range of ``images``: use ``(-1, 1)`` for raw diffusion samples; they
    are clamped and mapped to [0, 1], which the classifier was trained on.
    """
    lo, hi = _check_value_range(value_range)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1:] != (1, 28, 28):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"classifier_features needs digits of shape (N, 1, 28, 28), got {shape}; "
                         f"add the channel axis with images[:, None] for (N, 28, 28)")
    if len(images) == 0:
        raise ValueError("classifier_features got 0 images; pass at least one digit")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    dev = next(classifier.parameters()).device
    feats, preds = [], []
    with eval_mode(classifier):
        for chunk in images.split(batch_size):
            x = ((chunk.float() - lo) / (hi - lo)).clamp(0, 1).to(dev)
            f = classifier.features(x)
            feats.append(f.double().cpu())
            preds.append(classifier.head(f).argmax(1).cpu())
    return torch.cat(feats), torch.cat(preds)


def feature_statistics(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean vector and covariance matrix (rows are samples) as float64 NumPy arrays."""
    f = np.asarray(feats.detach().cpu() if isinstance(feats, torch.Tensor) else feats, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need a (N, D) array of features with N >= 2, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError(f"features contain {int((~np.isfinite(f)).sum())} NaN or infinite "
                         f"value(s); check the images they came from (e.g. a diverged sampler)")
    return f.mean(0), np.cov(f, rowvar=False)


def gaussian_frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """``|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))`` for two Gaussians.

    The square-root term is computed from an eigen-decomposition (see the
    code), which agrees with ``scipy.linalg.sqrtm`` where that is well
    defined and stays finite where it is not.
    """
    mu1, mu2 = (np.atleast_1d(mu1).astype(np.float64),
                np.atleast_1d(mu2).astype(np.float64))
    cov1, cov2 = (np.atleast_2d(cov1).astype(np.float64),
                  np.atleast_2d(cov2).astype(np.float64))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape:
        raise ValueError(
            f"shapes differ: means {mu1.shape} vs {mu2.shape}, "
            f"covariances {cov1.shape} vs {cov2.shape}")
    # tr((C1 C2)^(1/2)) = sum of sqrt(eigenvalues of S C2 S) with
    # S = C1^(1/2): that matrix is symmetric positive semi-definite, so eigh
    # is stable even when C1 or C2 is singular (e.g. feature units that are
    # always 0 after the ReLU).
    w1, v1 = linalg.eigh(cov1)
    s1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    tr_covmean = np.sqrt(
        np.clip(linalg.eigvalsh(s1 @ cov2 @ s1), 0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * tr_covmean
    return float(max(value, 0.0))


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors ``(N, D)``."""
    return gaussian_frechet_distance(*feature_statistics(feats_a), *feature_statistics(feats_b))


def frechet_distance_spread(feats, real_features, *, resamples: int = 200, seed: int = 0,
                            redraw_real: bool = False) -> float:
    """Bootstrap standard deviation of ``frechet_distance(feats, real_features)``.

    The generated set is redrawn ``resamples`` times with replacement (the real set is kept),
    and the standard deviation of the FDs is returned: how much the score would move if the
    sampler were run again with other noise.  With ``redraw_real`` the real set is redrawn
    too, so the spread also covers the luck of which real digits the samples are compared
    with (a score against another set of real digits moves by about that much more).  (A
    resample repeats some images, so its FDs sit a little above the original; the spread is
    what is used.)
    """
    f = torch.as_tensor(np.asarray(feats, dtype=np.float64))
    r = torch.as_tensor(np.asarray(real_features, dtype=np.float64))
    mu_r, cov_r = feature_statistics(r)
    gen = torch.Generator().manual_seed(seed)
    fds = []
    for _ in range(resamples):
        idx = torch.randint(len(f), (len(f),), generator=gen)
        if redraw_real:
            mu_r, cov_r = feature_statistics(r[torch.randint(len(r), (len(r),), generator=gen)])
        fds.append(gaussian_frechet_distance(*feature_statistics(f[idx]), mu_r, cov_r))
    return float(np.std(fds, ddof=1))


def within_class_variety(feats, labels) -> float:
    """Mean distance between two images of the same class, in classifier features.

    For each class, the average Euclidean distance over all pairs of its images; then the
    average over classes.  Real digits set the reference: a sampler that draws every digit of a
    class alike (as strong guidance does) scores well below it.
    """
    f = torch.as_tensor(np.asarray(feats, dtype=np.float64))
    labels = torch.as_tensor(labels)
    per_class = []
    for c in labels.unique():
        fc = f[labels == c]
        if len(fc) < 2:
            continue
        d = torch.cdist(fc, fc)
        per_class.append(float(d.sum() / (len(fc) * (len(fc) - 1))))
    if not per_class:
        raise ValueError("within_class_variety needs at least two images of some class")
    return float(np.mean(per_class))


@dataclass
class SamplerScore:
    """What :func:`evaluate_sampler` measured for one sampler setting.

    ``fd_sd`` is the bootstrap spread of ``fd`` over redraws of the samples and
    ``fd_sd_with_real`` over redraws of the samples and the real digits together
    (:func:`frechet_distance_spread`); ``variety`` the mean within-class feature distance
    (:func:`within_class_variety`) of the samples; ``eta`` DDIM's noise dial (None for DDPM).
    """

    sampler: str
    steps: int
    n: int
    guidance_scale: float
    fd: float
    label_accuracy: float
    seconds: float
    fd_sd: float | None = None
    variety: float | None = None
    spacing: str | None = None
    eta: float | None = None
    fd_sd_with_real: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _check_digit_model(model) -> None:
    """The classifier reads 1-channel 28x28 digits, so the diffusion model must produce them."""
    cfg = getattr(model, "config", {})
    if cfg.get("in_channels", 1) != 1:
        raise ValueError(
            f"evaluate_sampler scores 1-channel digits, but the model makes images with "
            f"{cfg['in_channels']} channels; evaluate a model built with in_channels=1")
    halvings = len(cfg.get("channel_mult", (1,))) - 1
    if 28 % 2**halvings:
        raise ValueError(
            f"evaluate_sampler draws 28x28 digits (the size the digit classifier reads), but "
            f"this model has {halvings + 1} levels and needs sides divisible by "
            f"{2**halvings}; evaluate a model with at most 3 levels (len(channel_mult) <= 3)")


def evaluate_sampler(model, schedule, classifier: DigitClassifier,
                     real_features, *, sampler: str = "ddim",
                     steps: int = 50, n: int = 500,
                     guidance_scale: float = 2.0, seed: int = 2,
                     spacing: str = "trailing", eta: float = 0.0,
                     batch_size: int = 250,
                     progress: bool = False) -> SamplerScore:
    """Draw ``n`` digits (labels ``0, 1, ..., 9, 0, ...``) and score them
    against real digits.

    ``sampler`` is ``"ddim"`` (``steps`` steps; deterministic at ``eta=0``,
    fresh noise at every step for ``eta > 0``, DDPM's amount at ``eta=1``)
    or ``"ddpm"`` (all the schedule's steps; ``steps``, ``spacing`` and
    ``eta`` are ignored).  Samples are drawn in batches of ``batch_size``
    from one generator seeded with ``seed``, so the same arguments give the
    same images on any device.
    Returns the Fréchet distance to ``real_features`` (compare it with the
    FD between two real sets of the same size) with its bootstrap spread,
    the fraction of samples the classifier labels as requested, their
    within-class variety, and the wall time of the sampling alone.
    """
    from .diffusion import ddim_sample, ddpm_sample

    if sampler not in ("ddim", "ddpm"):
        raise ValueError(
            f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
    for name, value, least in (("n", n, 2), ("steps", steps, 1),
                               ("batch_size", batch_size, 1)):
        if (isinstance(value, bool) or not isinstance(value, int)
                or value < least):
            why = " to estimate a covariance" if name == "n" else ""
            raise ValueError(
                f"{name} must be a whole number of at least {least}{why}, "
                f"got {value!r}")
    _check_digit_model(model)
    labels = torch.arange(n) % 10
    gen = torch.Generator().manual_seed(seed)
    image_shape = (1, 28, 28)
    samples, seconds = [], 0.0
    for y in labels.split(batch_size):
        start = time.perf_counter()
        if sampler == "ddpm":
            out = ddpm_sample(model, schedule, (len(y), *image_shape), y=y,
                              guidance_scale=guidance_scale,
                              generator=gen, progress=progress)
        else:
            out = ddim_sample(model, schedule, (len(y), *image_shape),
                              steps=steps, eta=eta,
                              y=y, guidance_scale=guidance_scale,
                              generator=gen,
                              spacing=spacing, progress=progress)
        x = out.x.cpu()
        seconds += time.perf_counter() - start
        samples.append(x)
    feats, preds = classifier_features(classifier, torch.cat(samples),
                                       value_range=(-1, 1))
    ddpm = sampler == "ddpm"
    return SamplerScore(
        sampler=sampler, steps=schedule.num_steps if ddpm else steps, n=n,
        guidance_scale=guidance_scale,
        fd=frechet_distance(feats, real_features),
        label_accuracy=float((preds == labels).float().mean()),
        seconds=seconds,
        fd_sd=frechet_distance_spread(feats, real_features),
        # Two digits of a class are needed to compare: n >= 20.
        variety=within_class_variety(feats, labels) if n >= 20 else None,
        spacing=None if ddpm else spacing,
        eta=None if ddpm else float(eta),
        fd_sd_with_real=frechet_distance_spread(feats, real_features,
                                                redraw_real=True))
