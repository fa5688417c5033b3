import ipywidgets as W
import pytest
import torch

from unet_edu.models import NaiveCNN, UNet2015
from unet_edu.receptive_field import layer_table
from unet_edu.widgets import IPYWIDGETS_8, FeatureMapExplorer
from unet_edu.widgets.feature_maps import (
    compute_frames, describe, layer_maps, layer_names, layer_receptive_field, render_maps,
)


def _models():
    torch.manual_seed(0)
    return {"naive": NaiveCNN(hidden=4, depth=5),
            "unet": UNet2015(features=(2, 4, 8), out_channels=1)}


def test_layer_names_and_maps():
    m = _models()
    assert layer_names(m["naive"]) == ["conv1", "conv2", "conv3", "conv4", "out"]
    names = layer_names(m["unet"])
    assert names[:3] == ["enc0", "enc1", "bottleneck"] and "skip0" in names and names[-1] == "out"
    x = torch.rand(2, 1, 16, 16)
    maps = layer_maps(m["naive"], x)
    assert maps["conv1"].shape == (2, 4, 16, 16) and (maps["conv1"] >= 0).all()  # after ReLU
    assert torch.allclose(maps["out"], m["naive"](x))
    assert layer_maps(m["unet"], x)["bottleneck"].shape == (2, 8, 4, 4)
    with pytest.raises(TypeError):
        layer_maps(torch.nn.Conv2d(1, 1, 3), x)


def test_receptive_fields_match_the_recurrence():
    naive = NaiveCNN(hidden=4, depth=5)
    assert [layer_receptive_field(naive, n) for n in layer_names(naive)] == [3, 5, 7, 9, 11]
    assert layer_receptive_field(naive, "out") == layer_table(naive)[-1]["rf"]
    unet = UNet2015(features=(2, 4, 8), out_channels=1)
    assert layer_receptive_field(unet, "enc0") == 5  # two 3x3 convolutions
    assert layer_receptive_field(unet, "skip0") == 5  # the skip carries the encoder map as it is
    assert layer_receptive_field(unet, "out") > layer_receptive_field(unet, "bottleneck") > 11


def test_render_maps_is_small_png():
    import io

    from PIL import Image

    png = render_maps(torch.rand(16, 7, 7), max_maps=12, width=120)
    assert png.startswith(b"\x89PNG") and len(png) < 5_000
    assert Image.open(io.BytesIO(png)).size == (4 * 8 + 1, 3 * 8 + 1)  # own resolution, 1-px gaps
    assert Image.open(io.BytesIO(png)).mode == "P"  # a palette: one byte per pixel
    big = render_maps(torch.rand(8, 132, 132), max_maps=8, width=200)
    assert len(big) < 60_000 and Image.open(io.BytesIO(big)).size[0] == 200


def test_compute_frames_keys_and_facts():
    m = _models()
    x = torch.rand(2, 1, 16, 16)
    frames = compute_frames(m, x, layers={"unet": ["enc0", "bottleneck"]})
    assert ("naive", 1, "conv3") in frames and ("unet", 0, "bottleneck") in frames
    assert ("unet", 0, "dec0") not in frames
    assert frames[("unet", 1, "bottleneck")].shape == (8, 4, 4)
    assert frames[("naive", 0, "conv3")].receptive_field == 7
    with pytest.raises(ValueError):
        compute_frames(m, x, layers={"unet": ["nope"]})


def _structure(e):
    """The explorer's parts: the menus above (model, input; one is left out when it would
    offer a single choice), the input column and the stack of model pages."""
    w = e.widget
    menus = [c for c in w.children if isinstance(c, W.Dropdown)]
    row = next(c for c in w.children if isinstance(c, W.HBox))
    inputs, body = row.children
    return (*menus, inputs, body)


def _visible(stack):
    """The child a stack shows now (ipywidgets 8), or the one a Box holds (7)."""
    return stack.children[stack.selected_index] if IPYWIDGETS_8 else stack.children[0]


def test_explorer_widget_links_controls():
    m = _models()
    e = FeatureMapExplorer(m, torch.rand(2, 1, 16, 16), image_names=["a", "b"])
    assert isinstance(e.widget, W.VBox) and e.layers_of("naive")[0] == "conv1"
    model_dd, image_dd, inputs, body = _structure(e)
    assert model_dd.options == ("naive", "unet")
    assert [label for label, _ in image_dd.options] == ["a", "b"]
    if IPYWIDGETS_8:
        assert isinstance(body, W.Stack) and len(body.children) == 2
        assert body.links[0].source == (model_dd, "index")
        noisy = inputs.children[0].children[0]
        assert noisy.links[0].source == (image_dd, "index")
        for k, mname in enumerate(["naive", "unet"]):
            layer_dd, per_layer = body.children[k].children
            assert per_layer.links[0].source == (layer_dd, "index")
            assert len(per_layer.children) == len(e.layers_of(mname))
            for j, lname in enumerate(e.layers_of(mname)):  # every (model, layer, image) is shown
                info, images, bar = per_layer.children[j].children
                assert images.links[0].source == (image_dd, "index")
                expected = [e.frames[(mname, i, lname)].png for i in range(2)]
                assert [i.value for i in images.children] == expected
                assert "unet-edu-fm-frame" in images.children[0]._dom_classes
                assert lname in info.value and "linear-gradient" in bar.value
    assert describe("dec1") == "decoder level 1" and describe("skip0").startswith("skip tensor")
    with pytest.raises(ValueError, match="batch"):
        FeatureMapExplorer(m, torch.rand(1, 16, 16))
    with pytest.raises(ValueError, match="empty"):
        FeatureMapExplorer(m, torch.rand(0, 1, 16, 16))


def test_python_observers_follow_the_menus():
    e = FeatureMapExplorer(_models(), torch.rand(2, 1, 16, 16))
    model_dd, image_dd, inputs, body = _structure(e)
    model_dd.index, image_dd.index = 1, 1
    layer_dd, per_layer = _visible(body).children
    layer_dd.index = 2
    picture = _visible(_visible(per_layer).children[1])
    assert picture.value == e.frames[("unet", 1, e.layers_of("unet")[2])].png


def test_every_control_changes_the_picture():
    m = _models()
    e = FeatureMapExplorer(m, torch.rand(2, 1, 16, 16))
    f = e.frames
    assert f[("naive", 0, "conv1")].png != f[("naive", 1, "conv1")].png  # the input menu
    assert f[("naive", 0, "conv1")].png != f[("naive", 0, "conv2")].png  # the layer menu
    assert f[("naive", 0, "out")].png != f[("unet", 0, "out")].png  # the model menu


def test_one_colour_scale_per_layer_with_its_values():
    m = _models()
    x = torch.rand(3, 1, 16, 16)
    frames = compute_frames(m, x, max_maps=4)
    with torch.no_grad():
        maps = layer_maps(m["naive"], x)["conv2"][:, :4]
    lo, hi = frames[("naive", 0, "conv2")].value_range
    assert lo == pytest.approx(float(maps.min())) and hi == pytest.approx(float(maps.max()))
    assert all(frames[("naive", i, "conv2")].value_range == (lo, hi) for i in range(3))
    # each map on its own scale on request
    own = compute_frames(m, x, max_maps=4, scale="channel")
    assert own[("naive", 0, "conv2")].value_range is None
    assert own[("naive", 0, "conv2")].png != frames[("naive", 0, "conv2")].png
    with pytest.raises(ValueError, match="scale must be"):
        compute_frames(m, x, scale="global")
    e = FeatureMapExplorer(m, x, max_maps=4)
    _, _, _, body = _structure(e)
    layer_dd, page = body.children[0].children
    layer_dd.index = 1  # conv2
    bar = _visible(page).children[2].value
    assert f"{hi:.3g}" in bar


def test_the_clean_picture_sits_beside_the_noisy_one():
    m = {"naive": NaiveCNN(hidden=4, depth=3)}
    clean = torch.rand(2, 1, 16, 16)
    noisy = clean + torch.randn(2, 1, 16, 16)
    e = FeatureMapExplorer(m, noisy, clean=clean, clean_label="clean digit")
    image_dd, inputs, _ = _structure(e)  # one model: no model menu
    assert image_dd.description == "input" and len(inputs.children) == 2
    titles = [part.children[1].value for part in inputs.children]
    assert "input" in titles[0] and "clean digit" in titles[1]
    with pytest.raises(ValueError, match="one clean picture per image"):
        FeatureMapExplorer(m, noisy, clean=clean[:1])


def test_menu_labels_fit_a_phone_and_captions_keep_one_height():
    from unet_edu.widgets.frames import text_width
    from unet_edu.widgets.feature_maps import short_name

    # A menu on a 390-pixel phone: about 330 pixels, less its label (80) and arrow (20).
    room = 230
    unet = UNet2015(features=(2, 4, 8, 16), out_channels=1)
    for name in layer_names(NaiveCNN(hidden=2, depth=5)) + layer_names(unet):
        assert text_width(short_name(name), 13) <= room, short_name(name)
    for label in ["naive CNN, 5 layers x 32", "U-Net, 3 levels", "U-Net, concat skips",
                  "U-Net, no skips", "digit A (sigma 1)", "test image 0"]:  # the chapters'
        assert text_width(label, 13) <= room, label
    e = FeatureMapExplorer(_models(), torch.rand(2, 1, 16, 16))
    _, _, _, body = _structure(e)
    heights = set()
    for page in body.children:
        for layer in page.children[1].children:
            heights.add(layer.children[0].layout.height)
    assert len(heights) == 1 and heights.pop().endswith("em")


def test_the_saved_state_is_measured():
    e = FeatureMapExplorer(_models(), torch.rand(2, 1, 16, 16), max_maps=8)
    size = e.state_bytes()
    assert 10_000 < size < 300_000
