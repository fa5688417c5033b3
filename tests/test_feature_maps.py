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


def test_explorer_widget_links_controls():
    m = _models()
    e = FeatureMapExplorer(m, torch.rand(2, 1, 16, 16), image_names=["a", "b"])
    w = e.widget
    assert isinstance(w, W.VBox) and e.layers_of("naive")[0] == "conv1"
    model_dd, image_dd = w.children[0], w.children[1]
    assert model_dd.options == ("naive", "unet") and image_dd.options == ("a", "b")
    inputs, body = w.children[2].children
    if IPYWIDGETS_8:
        assert isinstance(body, W.Stack) and len(body.children) == 2
        assert body.links[0].source == (model_dd, "index")
        assert inputs.links[0].source == (image_dd, "index")
        for k, mname in enumerate(["naive", "unet"]):
            layer_dd, per_layer = body.children[k].children
            assert per_layer.links[0].source == (layer_dd, "index")
            assert len(per_layer.children) == len(e.layers_of(mname))
            for j, lname in enumerate(e.layers_of(mname)):  # every (model, layer, image) is shown
                images = per_layer.children[j].children[1]
                assert images.links[0].source == (image_dd, "index")
                expected = [e.frames[(mname, i, lname)].png for i in range(2)]
                assert [i.value for i in images.children] == expected
                assert "unet-edu-fm-frame" in images.children[0]._dom_classes
    assert describe("dec1") == "decoder level 1" and describe("skip0").startswith("skip tensor")
    with pytest.raises(ValueError, match="batch"):
        FeatureMapExplorer(m, torch.rand(1, 16, 16))
    with pytest.raises(ValueError, match="empty batch"):
        FeatureMapExplorer(m, torch.rand(0, 1, 16, 16))


def test_every_control_changes_the_picture():
    m = _models()
    e = FeatureMapExplorer(m, torch.rand(2, 1, 16, 16))
    f = e.frames
    assert f[("naive", 0, "conv1")].png != f[("naive", 1, "conv1")].png  # the input menu
    assert f[("naive", 0, "conv1")].png != f[("naive", 0, "conv2")].png  # the layer menu
    assert f[("naive", 0, "out")].png != f[("unet", 0, "out")].png  # the model menu
