import ipywidgets as W
import pytest
import torch

from unet_edu import budget, device, seed_everything
from unet_edu.runtime import fast_mode
from unet_edu.widgets import IPYWIDGETS_8, linked_stack, png_image
from unet_edu.viz import image_to_png


def test_device_and_budget_on_cpu(monkeypatch):
    monkeypatch.setenv("UNET_EDU_DEVICE", "cpu")
    assert device().type == "cpu"
    monkeypatch.setenv("UNET_EDU_FAST", "1")
    b = budget()
    assert fast_mode() and b.fast and b.choose(10, 1000) == 10 and b.steps < 1000


def test_seed_everything_repeats():
    g1 = seed_everything(3)
    a = torch.randn(3), torch.randn(3, generator=g1)
    g2 = seed_everything(3)
    b = torch.randn(3), torch.randn(3, generator=g2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_linked_stack_switches_frames_in_the_browser():
    frames = [png_image(image_to_png(torch.full((4, 4), v))) for v in (0.0, 0.5, 1.0)]
    slider = W.IntSlider(min=0, max=2, value=1)
    shown = linked_stack(frames, slider)
    if IPYWIDGETS_8:
        assert isinstance(shown, W.Stack) and shown.selected_index == 1
        (link,) = shown.links
        assert link.source == (slider, "value") and link.target == (shown, "selected_index")
    else:
        slider.value = 2
        assert shown.children[0] is frames[2]


def test_png_bytes_are_png():
    assert image_to_png(torch.zeros(3, 3)).startswith(b"\x89PNG")


def test_compact_png_keeps_the_resolution_and_quantises():
    import io

    from PIL import Image

    from unet_edu.widgets.frames import compact_png

    ramp = torch.linspace(0, 1, 64).repeat(8, 1)
    grey = Image.open(io.BytesIO(compact_png(ramp)))
    assert grey.size == (64, 8) and grey.mode == "L" and len(set(grey.tobytes())) == 64
    four = Image.open(io.BytesIO(compact_png(ramp, levels=4)))
    assert four.mode == "P" and len(set(four.convert("L").tobytes())) == 4
    colour = Image.open(io.BytesIO(compact_png(ramp, cmap="viridis"))).convert("RGB")
    assert colour.getpixel((0, 0)) != colour.getpixel((63, 0))
    with pytest.raises(ValueError, match="one channel"):
        compact_png(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="levels"):
        compact_png(ramp, levels=1)
    with pytest.raises(ValueError, match="value_range must go up"):
        compact_png(ramp, value_range=(1.0, 1.0))


def test_frame_style_fixes_the_box():
    from unet_edu.widgets.frames import frame_style

    css = frame_style("box", 480, 240).value
    assert ".box {" in css and "max-width: 480px" in css and "aspect-ratio: 480 / 240" in css
    assert "image-rendering: pixelated" in css and "object-fit: contain" in css


def test_linked_stack_rejects_a_control_out_of_range():
    with pytest.raises(ValueError, match="at least one child"):
        linked_stack([], W.IntSlider())
    with pytest.raises(ValueError, match="one value per child"):
        linked_stack([W.HTML("a")], W.IntSlider(min=0, max=5, value=3))


def test_gate_explorer_links_a_frame_per_image():
    from unet_edu.models.variants import AttentionUNet
    from unet_edu.widgets.gates import GateExplorer, gate_frames

    model = AttentionUNet(features=(4, 8, 16))
    x = torch.rand(3, 1, 16, 16)
    masks = (x[:, 0] > 0.5).long()
    frames = gate_frames(model, x, masks)
    assert len(frames) == 3 and len(set(frames)) == 3
    w = GateExplorer(model, x, masks)
    slider, header, stack = w.children[:3]
    assert slider.max == 2 and header.value.count("gate, level") == 2
    if IPYWIDGETS_8:
        assert stack.links[0].source == (slider, "value")
        assert [i.value for i in stack.children] == frames
    with pytest.raises(ValueError, match="non-empty batch"):
        GateExplorer(model, x[:0])
    with pytest.raises(ValueError, match="one mask per image"):
        GateExplorer(model, x, masks[:2])
