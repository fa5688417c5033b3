"""The real nuclei image shipped with the package, and the 2015 recipe's tools for it.

Nothing here needs the network: the data is read from the package's own file, and one test
proves it by making every socket fail.
"""

import hashlib
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from unet_edu.data import (NUCLEI_PARTS, normalize_percentiles, nuclei, nuclei_raw,
                           separate_touching, unet_weight_map)
from unet_edu.models import UNet2015
from unet_edu.pretrained import experiments
from unet_edu.segmentation import (augmented_tiles, match_instances, mirror_pad,
                                   overlap_tile_predict, tile_margin, touching_instances)

PACKAGE = Path(__file__).resolve().parents[1] / "unet_edu"
DATA = PACKAGE / "data_files" / "nuclei.safetensors"


# --------------------------------------------------------------------------------------------
# The shipped data
# --------------------------------------------------------------------------------------------
def test_raw_data_is_the_published_image_and_annotation():
    raw = nuclei_raw()
    assert raw.image.shape == raw.instances.shape == (512, 512)
    assert raw.image.dtype == raw.instances.dtype == np.uint16
    ids = np.unique(raw.instances[raw.instances > 0])
    assert len(ids) == 125 and ids.max() == 183  # published ids, not renumbered
    assert raw.image.max() == 235 and raw.image.min() == 0
    # Nuclei are brighter than the background: image and labels belong together.
    fg = raw.instances > 0
    assert raw.image[fg].mean() > 2.5 * raw.image[~fg].mean()


def test_provenance_is_stored_with_the_data_and_beside_it():
    info = nuclei_raw().info
    assert info["licence"].startswith("CC0 1.0")
    assert "Caicedo" in info["citation"] and "Nature Methods 16" in info["citation"]
    assert "BBBC038v1" in info["origin"] and "stardist" in info["obtained_from"]
    side = json.loads(DATA.with_suffix(".json").read_text())
    assert side["sha256"] == hashlib.sha256(DATA.read_bytes()).hexdigest()
    for key, value in info.items():
        assert side[key] == value, key
    assert (DATA.parent / "README.md").read_text().count("CC0") >= 1


def test_loading_needs_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    from unet_edu import data

    data._nuclei_whole.cache_clear()
    part = nuclei("top-left")
    assert part.images.shape == (1, 1, 256, 256)


def test_shipped_files_stay_under_30_mb():
    total = sum(p.stat().st_size for p in PACKAGE.rglob("*")
                if p.is_file() and p.suffix in (".safetensors", ".json"))
    assert total < 30 * 2**20, f"shipped data and runs take {total / 2**20:.1f} MB"


def test_package_data_globs_include_the_data_files():
    text = (PACKAGE.parent / "pyproject.toml").read_text()
    block = text.split("[tool.setuptools.package-data]")[1].split("\n[")[0]
    globs = json.loads(block.split("=", 1)[1].strip())
    names = [p.relative_to(PACKAGE) for p in DATA.parent.iterdir()]
    for name in names:
        assert any(name.match(g) or Path("x", name).match(g) for g in globs), name


# --------------------------------------------------------------------------------------------
# Normalisation, separation, the parts
# --------------------------------------------------------------------------------------------
def test_normalize_percentiles_maps_the_percentiles_to_0_and_1():
    img = np.arange(1001, dtype=np.uint16).reshape(7, 143)[:, :143]
    out = normalize_percentiles(img, low=10, high=90)
    lo, hi = np.percentile(img.astype(float), [10, 90])
    assert out.dtype == torch.float32 and out.shape == img.shape
    assert out.flatten()[0].item() == pytest.approx(-lo / (hi - lo))
    assert np.percentile(out.numpy(), [10, 90]) == pytest.approx([0, 1], abs=1e-6)
    as_tensor = normalize_percentiles(torch.from_numpy(img.astype(np.int32)), 10, 90)
    assert torch.equal(as_tensor, out)


@pytest.mark.parametrize("image,match", [
    (np.zeros((8, 8), dtype=bool), "that is a mask"),
    (np.ones((8, 8), dtype=complex), "np.abs"),
    (np.full((8, 8), np.nan), "NaN"),
    (np.full((8, 8), 7, dtype=np.uint16), "constant"),
    (np.zeros(8), "at least 2 dimensions"),
])
def test_normalize_percentiles_names_the_fix(image, match):
    with pytest.raises(ValueError, match=match):
        normalize_percentiles(image)


def test_normalize_percentiles_checks_the_percentiles():
    with pytest.raises(ValueError, match="low=1, high=99.8"):
        normalize_percentiles(np.random.rand(4, 4), low=50, high=20)


def test_separate_touching_leaves_a_one_pixel_gap():
    labels = np.zeros((6, 11), dtype=np.int64)
    labels[1:5, 1:4] = 1
    labels[1:5, 4:7] = 2  # touching along a column
    labels[0, 10] = 3  # alone
    out = separate_touching(labels).numpy()
    assert (out[1:5, 3] == 0).all()  # the smaller id gives up its contact column
    assert (out[1:5, 4:7] == 2).all() and (out[1:5, 1:3] == 1).all() and out[0, 10] == 3
    assert touching_instances(labels, 1).tolist() == [1, 2]
    assert touching_instances(out, 1).tolist() == []  # nothing touches any more
    assert touching_instances(out, 2).tolist() == [1, 2]  # but the pair is still close


def test_separate_touching_separates_any_label_image():
    rng = np.random.default_rng(0)
    # Random blobs on a coarse grid, upscaled: many contacts, also diagonal ones.
    labels = np.kron(rng.integers(0, 6, (12, 12)), np.ones((3, 3), dtype=np.int64))
    out = separate_touching(labels).numpy()
    assert ((out == labels) | (out == 0)).all()
    hi = ndimage.maximum_filter(out, 3, mode="constant")
    lo = ndimage.minimum_filter(np.where(out > 0, out, 99), 3, mode="constant", cval=99)
    assert not ((out > 0) & ((hi > out) | (lo < out))).any()  # no two labels 8-adjacent


@pytest.mark.parametrize("labels,match", [
    (np.zeros((4, 4), dtype=np.float32), "integer labels"),
    (np.zeros((2, 4, 4), dtype=np.int64), r"\[0\]"),
    (-np.ones((4, 4), dtype=np.int64), "negative"),
])
def test_separate_touching_rejects_what_is_not_a_label_image(labels, match):
    with pytest.raises(ValueError, match=match):
        separate_touching(labels)


def test_parts_tile_the_image_and_keep_their_labels_apart():
    whole, top, bottom = nuclei("whole"), nuclei("top"), nuclei("bottom")
    assert torch.equal(torch.cat([top.images, bottom.images], -2), whole.images)
    assert torch.equal(torch.cat([top.instances, bottom.instances], -2), whole.instances)
    assert whole.instances.max() == 125 and len(whole.instances.unique()) == 126
    assert torch.equal(whole.masks, (whole.instances > 0).long())
    # Percentile normalisation of the whole image: background near 0, bright nuclei near 1.
    q = np.percentile(whole.images.numpy(), [1, 99.8])
    assert q == pytest.approx([0, 1], abs=1e-3)
    # Each part's weight map comes from its own labels only.
    assert torch.equal(top.weights[0], unet_weight_map(top.instances[0]))
    # The annotated nuclei that cross the split line are ignored in both halves, and only they.
    crossing = set(np.intersect1d(top.annotated.unique(), bottom.annotated.unique())) - {0}
    assert len(crossing) == 6
    assert set(bottom.annotated[bottom.ignore].unique().tolist()) == crossing
    assert not (bottom.ignore & (bottom.annotated == 0)).any()
    assert not whole.ignore.any()
    assert nuclei("top-left").box == NUCLEI_PARTS["top-left"] == (0, 256, 0, 256)


def test_nuclei_rejects_unknown_parts_and_bad_weights():
    with pytest.raises(ValueError, match="'top-left'"):
        nuclei("left")
    with pytest.raises(ValueError, match="w0=10, sigma=5"):
        nuclei("top", sigma=0)


def test_weight_map_keeps_the_two_nearest_distances():
    rng = np.random.default_rng(3)
    labels = np.kron(rng.integers(0, 5, (6, 7)), np.ones((4, 4), dtype=np.int64))
    w = unet_weight_map(labels).numpy()
    fg = labels > 0
    dists = np.sort(np.stack([ndimage.distance_transform_edt(labels != i)
                              for i in np.unique(labels[fg])]), axis=0)
    n = labels.size
    base = np.where(fg, n / (2 * fg.sum()), n / (2 * (n - fg.sum())))
    expect = base + np.where(fg, 0, 10 * np.exp(-(dists[0] + dists[1]) ** 2 / 50))
    assert w == pytest.approx(expect.astype(np.float32), rel=1e-6)


# --------------------------------------------------------------------------------------------
# Tiles augmented on the fly
# --------------------------------------------------------------------------------------------
def _part():
    d = nuclei("top-left")
    return d.images[0], d.masks[0], d.weights[0]


def test_augmented_tiles_without_augmentation_are_crops():
    image, masks, weights = _part()
    corners = torch.tensor([[0, 0], [100, 37], [220, 220]])
    g = torch.Generator().manual_seed(0)
    x, y, w = augmented_tiles(image, masks, weights, corners, 36, 20, g, deform=False,
                              flips=False)
    padded = mirror_pad(image[None], 20)[0]
    assert x.shape == (3, 1, 76, 76) and y.shape == w.shape == (3, 36, 36)
    for k, (r, c) in enumerate(corners.tolist()):
        assert torch.equal(x[k], padded[:, r:r + 76, c:c + 76])
        assert torch.equal(y[k], masks[r:r + 36, c:c + 36])
        assert torch.equal(w[k], weights[r:r + 36, c:c + 36])


def test_augmented_tiles_keep_image_and_labels_together():
    # Make the image *be* its mask: after any augmentation the tile's centre must still
    # equal its labels (exactly with flips, up to the bilinear resampling with deformation).
    _, masks, weights = _part()
    image = masks.float()[None]
    corners = torch.randint(0, 256 - 36 + 1, (16, 2), generator=torch.Generator().manual_seed(1))
    for deform in (False, True):
        g = torch.Generator().manual_seed(2)
        x, y, w = augmented_tiles(image, masks, weights, corners, 36, 20, g, deform=deform)
        centre = x[:, 0, 20:56, 20:56]
        agree = ((centre > 0.5).long() == y).float().mean().item()
        assert agree == 1.0 if not deform else agree > 0.97
        assert set(y.unique().tolist()) <= {0, 1}
        # Nearest-neighbour warping: every weight is one of the part's own weights.
        assert torch.isin(w.unique(), weights.unique()).all()
        # A heavy weight sits on background (the gaps), as before the warp.
        assert (y[w > 5] == 0).all()


def test_augmented_tiles_repeat_with_the_seed_and_differ_across_seeds():
    image, masks, weights = _part()
    corners = torch.tensor([[50, 60]] * 4)

    def draw(seed):
        return augmented_tiles(image, masks, weights, corners, 36, 20,
                               torch.Generator().manual_seed(seed))

    a, b, c = draw(0), draw(0), draw(1)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])
    # One field per call, a random symmetry per tile: the four tiles at one place differ.
    assert len({tuple(t.flatten()[:50].tolist()) for t in a[0]}) > 1


def test_augmented_tiles_name_the_fix():
    image, masks, weights = _part()
    g = torch.Generator().manual_seed(0)
    ok = torch.tensor([[0, 0]])
    with pytest.raises(ValueError, match="does not fit in the 256 x 256 image; use out <= 256"):
        augmented_tiles(image, masks, weights, ok, 300, 20, g)
    with pytest.raises(ValueError, match="masks has shape .* must match pixel for pixel"):
        augmented_tiles(image, masks[:100], weights, ok, 36, 20, g)
    with pytest.raises(ValueError, match="normalise the image first"):
        augmented_tiles((image * 255).to(torch.uint8), masks, weights, ok, 36, 20, g)
    with pytest.raises(ValueError, match=r"between \(0, 0\) and \(220, 220\)"):
        augmented_tiles(image, masks, weights, torch.tensor([[221, 0]]), 36, 20, g)
    with pytest.raises(ValueError, match="images\\[0\\]"):
        augmented_tiles(image[None], masks, weights, ok, 36, 20, g)


# --------------------------------------------------------------------------------------------
# Counting objects
# --------------------------------------------------------------------------------------------
def _two_cells():
    truth = np.zeros((10, 14), dtype=np.int64)
    truth[2:8, 1:6] = 1
    truth[2:8, 7:12] = 2  # a one-pixel gap at column 6
    return truth


def test_match_instances_counts_separated_merged_and_extra_objects():
    truth = _two_cells()
    perfect = match_instances(truth > 0, truth)
    assert perfect.matched.tolist() == [True, True] and perfect.iou.tolist() == [1.0, 1.0]
    assert (perfect.n_pred, perfect.false_positives, perfect.false_negatives) == (2, 0, 0)
    merged = truth > 0
    merged[4, 6] = True  # one pixel bridges the gap: one blob
    m = match_instances(merged, truth)
    assert m.n_pred == 1 and m.true_positives == 0 and m.merged.tolist() == [True, True]
    assert m.false_positives == 1 and m.false_negatives == 2
    extra = truth > 0
    extra[0, 13] = True  # a speck of false nucleus
    e = match_instances(extra, truth)
    assert e.true_positives == 2 and e.false_positives == 1 and "1 predicted" in e.counts()
    # A corner contact joins two components (8-connectivity).
    corner = np.zeros((4, 4), dtype=bool)
    corner[0, 0] = corner[1, 1] = True
    assert match_instances(corner, corner.astype(np.int64)).n_pred == 1


def test_match_instances_leaves_ignored_objects_out():
    truth = _two_cells()
    ignore = truth == 2
    m = match_instances(truth > 0, truth, ignore=ignore)
    assert m.ids.tolist() == [1] and m.n_true == 1 and m.n_pred == 1
    assert m.false_positives == 0


def test_match_instances_names_the_fix():
    truth = _two_cells()
    with pytest.raises(ValueError, match="must match pixel for pixel"):
        match_instances(np.zeros((10, 13), dtype=bool), truth)
    with pytest.raises(ValueError, match="integer labels"):
        match_instances(truth > 0, truth.astype(float))
    with pytest.raises(ValueError, match="logits"):
        match_instances(truth * 3.0 - 1, truth)
    with pytest.raises(ValueError, match="0.5"):
        match_instances(truth > 0, truth, threshold=0.3)


def test_the_nuclei_annotation_counts_itself_and_its_merges():
    whole = nuclei("whole")
    m = match_instances(whole.masks[0], whole.instances[0])
    assert m.true_positives == m.n_pred == 125 and m.false_positives == 0
    # Without the gaps, touching nuclei fuse into blobs: what a network must avoid.
    fused = match_instances(whole.annotated[0] > 0, whole.instances[0])
    assert fused.false_negatives >= int(fused.merged.sum()) > 20
    assert not (fused.merged & fused.matched).any()
    assert len(touching_instances(whole.instances[0])) > 40


# --------------------------------------------------------------------------------------------
# Prediction of the whole image, and the experiments
# --------------------------------------------------------------------------------------------
def test_overlap_tile_prediction_of_the_whole_image_equals_one_pass():
    torch.manual_seed(0)
    model = UNet2015(features=(4, 8, 16), out_channels=2, padding="valid").eval()
    image = nuclei("whole").images
    stitched = overlap_tile_predict(model, image, 128)
    with torch.no_grad():
        one_pass = model(mirror_pad(image, tile_margin(model, 512)))
    assert stitched.shape == one_pass.shape == (1, 2, 512, 512)
    assert torch.allclose(stitched, one_pass, atol=1e-5)


def test_overlap_tile_predict_names_the_fix():
    model = UNet2015(features=(8, 16, 32), out_channels=2, padding="valid").eval()
    with pytest.raises(ValueError, match="larger than the 100 x 100 image; use a tile of at "
                                         "most 100"):
        overlap_tile_predict(model, torch.rand(1, 1, 100, 100), 128)
    raw = torch.from_numpy(nuclei_raw().image.astype(np.int32))[None, None]
    with pytest.raises(ValueError, match="normalize_percentiles"):
        overlap_tile_predict(model, raw, 128)


class _EverythingNucleus(torch.nn.Module):
    """A stand-in network (padding "same") that calls every pixel a nucleus."""

    config = {"padding": "same"}

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), self.scale * torch.ones_like(x)], 1)


def test_score_nuclei_scores_the_bottom_half_without_the_cut_nuclei():
    s = experiments.score_nuclei(_EverythingNucleus())
    test = nuclei("bottom")
    keep = ~test.ignore[0]
    assert s.prob.shape == (512, 512)
    assert s.iou == pytest.approx((test.masks[0].bool() & keep).sum().item() / keep.sum().item())
    assert len(s.block_iou) == 32  # 4 x 8 blocks of 64 x 64
    # One blob over everything touches the ignored nuclei, so it is not counted.
    assert s.match.n_true == 61 and s.match.n_pred == 0 and s.separated == 0.0
    assert s.count_error == -61
    assert s.touching.sum() == 29 and len(s.touching) == 61
    assert not s.collapsed  # it calls pixels nucleus, however badly


class _NothingNucleus(_EverythingNucleus):
    """A stand-in network stuck at the trivial answer: background everywhere."""

    def forward(self, x):
        return torch.cat([self.scale * torch.ones_like(x), torch.zeros_like(x)], 1)


def test_a_network_that_calls_everything_background_is_collapsed():
    s = experiments.score_nuclei(_NothingNucleus())
    assert s.collapsed and s.iou == 0.0 and s.separated == 0.0


def test_the_few_annotations_runs_see_only_the_top_left_quarter():
    few = experiments.EXPERIMENTS["nuclei-few-annotations"]
    weight = experiments.EXPERIMENTS["nuclei-weight-map"]
    assert set(few.variants) == {"elastic", "rigid"}
    corners = few.data()
    assert len(corners) == (256 - 36 + 1) ** 2 and corners.max().item() == 256 - 36
    # Only the augmentation differs from the weighted half-image runs: budget, seeds, net.
    assert (few.steps, few.batch_size, few.lr, few.seeds) == \
        (weight.steps, weight.batch_size, weight.lr, weight.seeds)
    torch.manual_seed(0)
    model = few.variants["elastic"]()
    batch = (corners[:4],)
    out = {v: few.loss_for(v)(model, batch, torch.Generator().manual_seed(0)).item()
           for v in few.variants}
    assert out["elastic"] != pytest.approx(out["rigid"])


def test_nuclei_experiments_train_from_their_own_parts():
    weight = experiments.EXPERIMENTS["nuclei-weight-map"]
    quarter = experiments.nuclei_tile_corners("top-left")
    assert len(quarter) == (256 - 36 + 1) ** 2
    assert len(weight.data()) == (256 - 36 + 1) * (512 - 36 + 1)
    assert set(weight.variants) == {"weighted", "plain"}
    torch.manual_seed(0)
    model = weight.variants["weighted"]()
    corners = weight.data()[:4]
    losses = {}
    for v in weight.variants:
        g = torch.Generator().manual_seed(0)
        losses[v] = weight.loss_for(v)(model, (corners,), g)
        assert losses[v].dim() == 0 and torch.isfinite(losses[v])
    assert losses["weighted"].item() != pytest.approx(losses["plain"].item())
    # Without deformation the loss still trains: the same corners give a flipped crop.
    g = torch.Generator().manual_seed(0)
    rigid = experiments.nuclei_loss("top-left", deform=False, weighted=True)
    assert torch.isfinite(rigid(model, (quarter[:2],), g))
