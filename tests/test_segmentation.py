import pytest
import torch

from unet_edu.data import synthetic_cells
from unet_edu.models import UNet2015
from unet_edu.segmentation import (
    boundary_accuracy, boundary_band, dice, elastic_deform, elastic_field, gap_background_rate, iou, mirror_pad,
    overlap_tile_predict, separated_instances, tile_margin, touching_gaps, weighted_cross_entropy,
)


def test_iou_and_dice_on_known_masks():
    a = torch.zeros(4, 4, dtype=torch.long)
    b = torch.zeros(4, 4, dtype=torch.long)
    a[:2] = 1  # 8 pixels
    b[1:3] = 1  # 8 pixels, 4 shared
    assert iou(a, b) == pytest.approx(4 / 12)
    assert dice(a, b) == pytest.approx(8 / 16)
    assert iou(a, a) == 1.0 and dice(torch.zeros(3), torch.zeros(3)) == 1.0


def test_boundary_band_and_accuracy():
    m = torch.zeros(8, 8, dtype=torch.long)
    m[:, 4:] = 1
    band = boundary_band(m, width=1)
    assert band[:, 3:5].all() and not band[:, :3].any() and not band[:, 5:].any()
    assert boundary_accuracy(m, m) == 1.0
    shifted = torch.zeros_like(m)
    shifted[:, 5:] = 1  # column 4 is now wrong: half the band
    assert boundary_accuracy(shifted, m) == pytest.approx(0.5)


def test_touching_gaps_and_separation():
    inst = torch.zeros(5, 7, dtype=torch.long)
    inst[1:4, 1:3] = 1
    inst[1:4, 4:6] = 2  # column 3 is a one-pixel gap between two cells
    gaps = touching_gaps(inst)
    assert gaps[1:4, 3].all() and gaps.sum() == 3 + 2  # the column, plus the diagonal corners
    merged = inst > 0
    merged[1:4, 3] = True
    assert gap_background_rate(inst > 0, inst) == 1.0
    assert gap_background_rate(merged, inst) < 1.0
    assert separated_instances(inst > 0, inst) == (2, 2)
    assert separated_instances(merged, inst) == (0, 2)


def test_weighted_cross_entropy_reduces_to_plain_and_weights_pixels():
    logits = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 2, (2, 4, 4), generator=torch.Generator().manual_seed(1))
    plain = torch.nn.functional.cross_entropy(logits, target)
    assert torch.allclose(weighted_cross_entropy(logits, target), plain)
    assert torch.allclose(weighted_cross_entropy(logits, target, torch.ones(2, 4, 4)), plain)
    assert torch.allclose(weighted_cross_entropy(logits, target, 3 * torch.ones(2, 4, 4)), 3 * plain)
    with pytest.raises(ValueError):
        weighted_cross_entropy(logits, target, torch.ones(4, 4))


def test_elastic_deform_moves_image_and_mask_together():
    d = synthetic_cells(1, 64, seed=0)
    img, lab = elastic_deform(d.images[0], d.instances[0], seed=1)
    img2, lab2 = elastic_deform(d.images[0], d.instances[0], seed=1)
    assert torch.equal(img, img2) and torch.equal(lab, lab2)  # repeatable
    assert lab.dtype == torch.long and set(lab.unique().tolist()) <= set(d.instances[0].unique().tolist())
    assert not torch.equal(lab, d.instances[0])
    # Warping with the same field: cells stay brighter than background after the warp.
    assert img[0][lab > 0].mean() > img[0][lab == 0].mean() + 0.2


def test_elastic_field_is_the_papers_coarse_grid():
    # Corners of the field are the lattice's own random vectors: standard deviation sd.
    corners = torch.stack([elastic_field(64, 64, seed=s)[:, 0, 0] for s in range(300)])
    assert 8.5 < corners.std().item() < 11.5
    f = elastic_field(96, 96, seed=0)
    assert f.shape == (2, 96, 96)
    # Smooth: a 3 x 3 lattice over 96 pixels changes by well under a pixel per pixel.
    assert f.diff(dim=-1).abs().mean() < 1.0 and f.diff(dim=-2).abs().mean() < 1.0
    assert f.norm(dim=0).mean() > 4  # and it visibly moves things (several pixels)
    assert torch.equal(elastic_field(8, 8, sd=0), torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="the paper uses 10"):
        elastic_field(8, 8, sd=-1)


def test_elastic_deform_moves_content_by_the_field():
    # With a constant field (patched in) a single bright pixel must move by minus the field.
    import unet_edu.segmentation as seg

    img = torch.zeros(1, 32, 32)
    img[0, 16, 16] = 1.0
    original = seg.elastic_field
    try:
        seg.elastic_field = lambda h, w, grid, sd, seed: torch.stack(
            [torch.full((h, w), 3.0), torch.full((h, w), -2.0)])
        out, none = seg.elastic_deform(img, None)
    finally:
        seg.elastic_field = original
    # Output pixel p samples the input at p + (3, -2): the bright pixel appears at
    # (row 16 + 2, column 16 - 3).
    assert none is None and out[0].argmax().item() == 18 * 32 + 13


def test_mirror_pad_reflects():
    x = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    assert mirror_pad(x, 2)[0, 0, 0].tolist() == [2, 1, 0, 1, 2, 3, 2, 1]
    assert mirror_pad(torch.zeros(1, 1, 3, 3), 5).shape[-1] == 13


def test_overlap_tile_equals_whole_image_and_no_overlap_differs():
    torch.manual_seed(0)
    model = UNet2015(features=(8, 8, 8), out_channels=2, padding="valid").eval()
    assert tile_margin(model, 36) == 20 and model.output_size(36 + 40) == 36
    x = torch.rand(1, 1, 72, 72)
    stitched = overlap_tile_predict(model, x, 36)
    with torch.no_grad():
        whole = model(mirror_pad(x, 20))
    assert torch.allclose(stitched, whole, atol=1e-5)  # no seams: tiles see real context
    alone = overlap_tile_predict(model, x, 36, overlap=False)
    assert alone.shape == stitched.shape and not torch.allclose(alone, stitched, atol=1e-4)
    assert overlap_tile_predict(model, torch.rand(1, 1, 50, 61), 36).shape == (1, 2, 50, 61)


def test_training_tiles_pair_inputs_with_their_central_labels():
    from unet_edu.data import synthetic_cells
    from unet_edu.segmentation import training_tiles

    cells = synthetic_cells(3, 48, seed=0)
    tiles, masks, weights = training_tiles(cells.images, cells.instances, out=20, margin=6,
                                           per_image=5, deform=False, seed=0)
    assert tiles.shape == (15, 1, 32, 32) and masks.shape == weights.shape == (15, 20, 20)
    assert masks.dtype == torch.long and set(masks.unique().tolist()) <= {0, 1}
    # Without deformation a tile's centre is a crop of its image: find it again.
    hits = 0
    for t, m in zip(tiles, masks):
        for img, inst in zip(cells.images, cells.instances):
            for r in range(48 - 20 + 1):
                for c in range(48 - 20 + 1):
                    if torch.equal(img[:, r:r + 20, c:c + 20], t[:, 6:26, 6:26]):
                        hits += torch.equal((inst[r:r + 20, c:c + 20] > 0).long(), m)
                        break
                else:
                    continue
                break
    assert hits == 15
    deformed = training_tiles(cells.images, cells.instances, out=20, margin=6, per_image=5)
    assert deformed[0].shape == (30, 1, 32, 32)  # one elastic copy of each image
    with pytest.raises(ValueError, match="use out <= 48"):
        training_tiles(cells.images, cells.instances, out=60, margin=0)
    with pytest.raises(ValueError, match="of the same N"):
        training_tiles(cells.images, cells.instances[:2], out=20, margin=6)
