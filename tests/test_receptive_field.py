import pytest
import torch

from unet_edu.models import DiffusionUNet, NaiveCNN, UNet2015
from unet_edu.receptive_field import (LayerSpec, effective_receptive_field, erf_extent, exact_receptive_field,
                                      layer_table, rf_extent)


def test_naive_cnn_five_layers_sees_11_pixels():
    net = NaiveCNN(depth=5, hidden=8)
    assert layer_table(net)[-1]["rf"] == 11
    mask = exact_receptive_field(net, (1, 32, 32), (16, 16))
    assert rf_extent(mask) == (11, 11) and int(mask.sum()) == 121


@pytest.mark.parametrize("depth", [2, 3, 7, 10])
def test_naive_cnn_rf_is_2_depth_plus_1(depth):
    assert layer_table(NaiveCNN(depth=depth, hidden=4))[-1]["rf"] == 2 * depth + 1
    assert rf_extent(exact_receptive_field(NaiveCNN(depth=depth, hidden=4), (1, 48, 48), (24, 24))) == (2 * depth + 1,) * 2


def test_layer_table_recurrence_with_strides():
    rows = layer_table([("conv", 3, 1), ("pool", 2, 2), ("conv", 3, 1), LayerSpec("up", 2, 2, transposed=True)])
    assert [r["rf"] for r in rows] == [3, 4, 8, 8]
    assert [r["jump"] for r in rows] == [1, 2, 2, 1]


def test_exact_rf_does_not_depend_on_channel_widths():
    narrow = UNet2015(features=(1, 1, 1), padding="valid")
    wide = UNet2015(features=(4, 8, 16), padding="valid")
    positions = [(0, 0), (3, 5), (10, 10)]
    assert torch.equal(exact_receptive_field(narrow, (1, 76, 76), positions),
                       exact_receptive_field(wide, (1, 76, 76), positions))


def test_unet2015_valid_exact_rf_is_position_dependent_and_inside_input():
    net = UNet2015(features=(1, 1, 1, 1, 1), padding="valid")  # the paper's geometry, 1 channel
    masks = exact_receptive_field(net, (1, 572, 572), [(0, 0), (5, 9), (387, 387)])
    sizes = [rf_extent(m) for m in masks]
    assert sizes[0] == sizes[2]  # same phase of the pooling grid, same field
    assert sizes[0] != sizes[1]  # another phase, another field
    assert masks[0][0, 0] and masks[2][-1, -1]  # corner outputs reach the corner inputs
    # The field is never smaller than the 185 pixels a translation-invariant 572 -> 388 map would need.
    assert min(min(s) for s in sizes) >= 572 - 388 + 1


def test_exact_rf_of_attention_model_is_global():
    net = DiffusionUNet(base_channels=8, channel_mult=(1, 2), norm_groups=4, num_heads=2, time_conditioning=False)
    mask = exact_receptive_field(net, (1, 16, 16), (0, 0), forward=lambda m, x: m(x))
    assert bool(mask.all())


def test_positions_outside_output_are_rejected():
    with pytest.raises(ValueError, match="inside the output map"):
        exact_receptive_field(NaiveCNN(hidden=4), (1, 8, 8), (8, 0))


def test_effective_rf_is_normalised_and_inside_exact_rf():
    net = NaiveCNN(depth=5, hidden=8)
    erf = effective_receptive_field(net, torch.randn(4, 1, 32, 32), (16, 16))
    assert erf.shape == (32, 32) and erf.sum().item() == pytest.approx(1.0, abs=1e-5)
    exact = exact_receptive_field(net, (1, 32, 32), (16, 16))
    assert erf[~exact].abs().max().item() == 0.0
    assert 1 <= erf_extent(erf, 0.95) <= 11
    assert net.training  # mode restored


def test_erf_std_of_a_gaussian_is_its_sigma():
    from unet_edu.receptive_field import erf_std

    r = torch.arange(81, dtype=torch.float64) - 40
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 5.0**2))
    assert erf_std(g) == pytest.approx(5.0, rel=1e-6)
    point = torch.zeros(9, 9)
    point[4, 4] = 1
    assert erf_std(point) == 0.0


def test_rf_overlay_log_scale_shows_the_halo():
    # A peak of 1 with a halo at 1% of it: on the log scale (three decades) the halo gets a
    # colour; on the linear scale it is drawn at 1% of the colour range, near black.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from unet_edu.viz import rf_overlay

    heat = torch.full((9, 9), 0.01)
    heat[4, 4] = 1.0
    shown = {}
    for scale in ("linear", "log"):
        ax = rf_overlay(torch.zeros(9, 9), None, heat, ax=plt.figure().gca(), scale=scale)
        layer = ax.get_images()[1]
        shown[scale] = float(layer.norm(layer.get_array())[0, 0])
        plt.close(ax.figure)
    assert shown["linear"] < 0.02 and shown["log"] > 0.3
    with pytest.raises(ValueError, match="'linear' or 'log'"):
        rf_overlay(torch.zeros(9, 9), None, heat, scale="sqrt")


def test_erf_box_reports_the_clipped_extent_at_a_border():
    from unet_edu.receptive_field import erf_box

    # A flat 5 x 5 blob in the middle: the square holding all of it is 5 wide, unclipped.
    erf = torch.zeros(21, 21)
    erf[8:13, 8:13] = 1.0
    box = erf_box(erf, mass=1.0)
    assert (box.side, box.height, box.width, box.clipped) == (5, 5, 5, False)
    assert erf_extent(erf, mass=1.0) == 5
    # The same blob cut by the top border (rows 0..2 only): the square centred on row 1 is
    # nominally 5 wide, rows -1..3, but the image holds only rows 0..3 and the field only
    # rows 0..2; the box says so, and is never larger than the field's own extent.
    top = torch.zeros(21, 21)
    top[0:3, 8:13] = 1.0
    box = erf_box(top, mass=1.0)
    assert box.clipped and (box.top, box.left) == (0, 8)
    assert (box.side, box.height, box.width) == (5, 3, 5)
    # A field with a gap: the box spans from its first to its last non-zero row and column.
    gap = torch.zeros(21, 21)
    gap[10, 8] = gap[10, 12] = 1.0
    box = erf_box(gap, mass=1.0)
    assert (box.side, box.top, box.left, box.height, box.width) == (5, 10, 8, 1, 5)
    assert erf_extent(top, mass=1.0) == box.side  # the nominal side, as before


def test_erf_box_refuses_a_map_without_gradient():
    from unet_edu.receptive_field import erf_box

    with pytest.raises(ValueError, match="holds no gradient"):
        erf_box(torch.zeros(5, 5))
    with pytest.raises(ValueError, match="holds no gradient"):
        erf_extent(torch.full((5, 5), float("nan")))
    with pytest.raises(ValueError, match="one \\(H, W\\) map"):
        erf_box(torch.ones(2, 5, 5))


def test_on_canvas_places_images_at_the_centre():
    from unet_edu.receptive_field import on_canvas

    images = torch.rand(2, 1, 4, 6)
    canvas, (top, left) = on_canvas(images, 10)
    assert canvas.shape == (2, 1, 10, 10) and (top, left) == (3, 2)
    assert torch.equal(canvas[:, :, 3:7, 2:8], images)
    assert canvas.sum() == pytest.approx(images.sum().item())
    background = torch.full((2, 1, 10, 10), 7.0)
    canvas, _ = on_canvas(images, 10, background)
    assert canvas[0, 0, 0, 0] == 7.0 and background[0, 0, 3, 2] == 7.0  # not modified
    with pytest.raises(ValueError, match="cannot hold"):
        on_canvas(images, 5)
    with pytest.raises(ValueError, match="one canvas per image"):
        on_canvas(images, 10, torch.zeros(1, 1, 10, 10))
    with pytest.raises(ValueError, match="images\\[None\\]"):
        on_canvas(images[0], 10)


def test_effective_fields_per_group_match_the_batch_measurement():
    from unet_edu.receptive_field import effective_receptive_fields

    torch.manual_seed(0)
    net = NaiveCNN(depth=4, hidden=8)
    x = torch.randn(6, 1, 24, 24)
    maps = effective_receptive_fields(net, x, (12, 12), group=3)
    assert maps.shape == (2, 24, 24)
    for g in range(2):
        one = effective_receptive_field(net, x[3 * g:3 * g + 3], (12, 12))
        assert torch.allclose(maps[g].float(), one, atol=1e-6)
    with pytest.raises(ValueError, match="groups of 4"):
        effective_receptive_fields(net, x, (12, 12), group=4)
    dead = NaiveCNN(depth=3, hidden=2)
    for p in dead.parameters():
        torch.nn.init.constant_(p, -1.0)  # every ReLU dead: no gradient
    with pytest.raises(ValueError, match="no gradient reaches"):
        effective_receptive_fields(dead, torch.rand(2, 1, 8, 8), (4, 4))


def test_without_normalization_removes_groupnorm_coupling():
    # GroupNorm averages over the whole map, so the corner output of a diffusion U-Net has a
    # gradient from every input pixel; without it, only from what the convolutions reach.
    from unet_edu.receptive_field import without_normalization

    torch.manual_seed(0)
    net = DiffusionUNet(base_channels=8, channel_mult=(1, 2), norm_groups=4, num_heads=2,
                        time_conditioning=False, attention_levels=())
    net.mid_attn = torch.nn.ModuleList()
    x = torch.randn(2, 1, 64, 64)
    reach = exact_receptive_field(net, (1, 64, 64), (0, 0))
    assert not bool(reach.all())
    built = effective_receptive_field(net, x, (0, 0))
    bare = without_normalization(net)
    plain = effective_receptive_field(bare, x, (0, 0))
    assert bool((built > 0).all())  # every pixel is coupled
    assert float(built[~reach].sum()) > 0.01
    assert float(plain[~reach].abs().sum()) == 0.0
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in bare.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in net.modules())  # model untouched
