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
