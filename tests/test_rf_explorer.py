import ipywidgets as W
import pytest
import torch
from torch import nn

from unet_edu.models import DiffusionUNet, NaiveCNN, UNet2015
from unet_edu.receptive_field import exact_receptive_field
from unet_edu.widgets import IPYWIDGETS_8
from unet_edu.widgets.receptive_field import (ReceptiveFieldExplorer, compute_frames, default_forward, exact_twin,
                                              position_grid, rf_data, render_frame, overlay_rgb)


def test_position_grid_spans_the_map():
    grid = position_grid(28, 20, 4)
    assert len(grid) == 4 and all(len(r) == 4 for r in grid)
    assert grid[0][0] == (0, 0) and grid[-1][-1] == (27, 19)
    assert position_grid(9, 9, 1) == [[(4, 4)]]
    with pytest.raises(ValueError, match="n must lie"):
        position_grid(4, 4, 5)


def test_naive_cnn_fields_are_11_pixels_inside_the_image():
    torch.manual_seed(0)
    net = NaiveCNN(depth=5, hidden=4)
    data = rf_data(net, torch.randn(2, 1, 24, 24), [(12, 12), (0, 0)])
    assert data[0].size == (11, 11) and data[0].pixels == 121
    assert data[1].size == (6, 6)  # clipped by the image corner
    for d in data:
        assert d.erf.sum().item() == pytest.approx(1.0, abs=1e-5)
        assert d.erf[~d.mask].abs().max().item() == 0.0  # the effective field lies inside the exact one
        assert 1 <= d.erf_size <= 11 and d.erf_sigma > 0


def test_exact_twin_keeps_the_fields():
    wide = UNet2015(features=(4, 8, 16), padding="same")
    twin = exact_twin(wide)
    assert twin.config["features"] == [1, 1, 1]
    pos = [(0, 0), (7, 9)]
    assert torch.equal(exact_receptive_field(wide, (1, 16, 16), pos), exact_receptive_field(twin, (1, 16, 16), pos))


def test_diffusion_unet_twin_drops_conditioning_and_keeps_removed_attention():
    net = DiffusionUNet(base_channels=8, channel_mult=(1, 2), norm_groups=4, num_heads=2, num_classes=3)
    net.mid_attn = nn.ModuleList()
    twin = exact_twin(net)
    assert twin.time_embed is None and twin.class_embed is None and len(twin.mid_attn) == 0
    assert len(twin.down[1]["attns"][0]) == 1  # attention the model still has is kept
    out = default_forward(7)(net, torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 1, 8, 8)


def test_attention_makes_the_exact_field_global_and_removing_it_local():
    torch.manual_seed(0)
    net = DiffusionUNet(base_channels=8, channel_mult=(1, 2), norm_groups=4, num_heads=2, attention_levels=())
    x = torch.randn(1, 1, 128, 128)
    (with_attn,) = rf_data(net, x, [(0, 0)])
    assert with_attn.pixels == 128 * 128  # the middle block's attention sees everything
    net.mid_attn = nn.ModuleList()
    (without,) = rf_data(net, x, [(0, 0)])
    assert without.pixels < 128 * 128 and without.size[0] < 128


def test_frames_and_widget():
    torch.manual_seed(0)
    models = {"naive": NaiveCNN(depth=3, hidden=4), "unet": UNet2015(features=(2, 4))}
    image = torch.rand(1, 16, 16)
    frames = compute_frames(models, image, 2, render=False)
    assert set(frames) == {"naive", "unet"} and len(frames["naive"]) == 2
    assert frames["naive"][1][0][1].position == (15, 0)
    assert frames["naive"][0][0][1].size == (4, 4)  # 7x7 field cut by the corner
    dead = NaiveCNN(depth=3, hidden=2)
    for p in dead.parameters():
        nn.init.constant_(p, -1.0)  # every ReLU dead: no gradient reaches the input
    (d,) = rf_data(dead, image[None], [(3, 3)])
    assert d.erf_size == 0 and d.erf.sum().item() == 0.0 and d.size == (7, 7)
    data = frames["naive"][1][0][1]
    png = render_frame(image[0], data)
    assert png.startswith(b"\x89PNG") and len(png) < 4_000
    rgb = overlay_rgb(image[0], data, scale=4)
    assert rgb.shape == (64, 64, 3)
    cyan = (rgb[..., 1] > 0.85) & (rgb[..., 2] > 0.95) & (rgb[..., 0] < 0.05)
    # the field of (15, 0) with a 7x7 reach covers rows 12..15, columns 0..3: its outline lies there
    rows, cols = cyan.nonzero(as_tuple=True)
    assert rows.min() == 48 and rows.max() == 63 and cols.min() == 0 and cols.max() == 15
    explorer = ReceptiveFieldExplorer(models, image, 2)
    box = explorer.widget
    assert isinstance(box, W.VBox)
    dropdown, row, col, view = box.children[:4]
    # the sliders read out the output pixel's own row and column, not a grid index
    assert [label for label, _ in row.options] == ["0", "15"] and row.description == "output row"
    assert [label for label, _ in col.options] == ["0", "15"]
    if IPYWIDGETS_8:
        assert isinstance(view, W.Stack) and len(view.children) == 2
        assert view.links[0].source == (dropdown, "index")
        for m, name in enumerate(models):
            page = view.children[m]
            assert page.links[0].source == (row, "index") and len(page.children) == 2
            for r in range(2):
                cells = page.children[r]
                assert cells.links[0].source == (col, "index") and len(cells.children) == 2
                for c in range(2):  # every (model, row, column) shows its own frame
                    caption, picture = cells.children[c].children
                    assert picture.value == explorer.frames[name][r][c][0]
                    assert str(explorer.frames[name][r][c][1].position) in caption.value
    # the Python observers move the view without the browser
    dropdown.index, row.index, col.index = 1, 0, 1
    shown = view
    for _ in range(3):
        shown = shown.children[shown.selected_index] if IPYWIDGETS_8 else shown.children[0]
    assert shown.children[1].value == explorer.frames["unet"][0][1][0]
    legend = box.children[4].value
    assert "linear-gradient" in legend and "exact receptive field" in legend
    assert 5_000 < explorer.state_bytes() < 200_000


def test_overlay_has_the_figure_colours():
    from matplotlib import colormaps
    from matplotlib.colors import to_rgb

    from unet_edu.style import CMAPS, MARKS

    torch.manual_seed(0)
    image = torch.zeros(1, 8, 8)
    (d,) = rf_data(NaiveCNN(depth=2, hidden=8), torch.randn(4, 1, 8, 8), [(4, 4)])
    assert d.erf.max() > 0
    rgb = overlay_rgb(image[0], d, scale=1)
    assert torch.allclose(rgb[4, 4], torch.tensor(to_rgb(MARKS["pixel"])))
    heat = d.erf / d.erf.max()
    expected = 0.6 * torch.tensor(colormaps[CMAPS["heat"]](float(heat[3, 3]))[:3]).float()
    assert heat[3, 3] > 0 and torch.allclose(rgb[3, 3], expected, atol=1e-5)  # black: heat alone


def test_empty_inputs_name_the_fix():
    models = {"naive": NaiveCNN(depth=3, hidden=2)}
    with pytest.raises(ValueError, match="at least one model"):
        ReceptiveFieldExplorer({}, torch.rand(1, 16, 16), 2)
    with pytest.raises(ValueError, match="one picture"):
        ReceptiveFieldExplorer(models, torch.rand(0, 16, 16), 2)
    with pytest.raises(ValueError, match="erf_inputs is empty"):
        ReceptiveFieldExplorer(models, torch.rand(1, 16, 16), 2,
                               erf_inputs=torch.rand(0, 1, 16, 16))
    with pytest.raises(ValueError, match="of the image's size"):
        ReceptiveFieldExplorer(models, torch.rand(1, 16, 16), 2,
                               erf_inputs=torch.rand(2, 1, 12, 12))
