import ipywidgets as W
import pytest
import torch

from unet_edu import budget, device, seed_everything
from unet_edu.runtime import fast_mode
from unet_edu.widgets import IPYWIDGETS_8, linked_stack, png_image
from unet_edu.widgets.frames import value_slider
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


def test_linked_stack_also_follows_its_control_from_python():
    """The observer path: in a kernel whose front end drops the browser link, moving the
    control (here from Python, as the kernel sees a move in the page) still switches."""
    frames = [W.HTML(f"frame {i}") for i in range(3)]
    menu = W.Dropdown(options=["a", "b", "c"], index=0)
    shown = linked_stack(frames, menu, "index")
    for i in (2, 1, 0):
        menu.index = i
        visible = shown.children[shown.selected_index] if IPYWIDGETS_8 else shown.children[0]
        assert visible is frames[i]
    slider = value_slider("t", ["999", "500", "0"], index=2)
    stack = linked_stack(frames, slider, "index")
    slider.index = 0
    visible = stack.children[stack.selected_index] if IPYWIDGETS_8 else stack.children[0]
    assert visible is frames[0]


def test_value_slider_reads_out_the_values():
    slider = value_slider("sigma", [0.1, 0.5, 1.0], index=1)
    assert slider.value == 1 and slider.index == 1 and slider.label == "0.5"
    assert [label for label, _ in slider.options] == ["0.1", "0.5", "1.0"]
    with pytest.raises(ValueError, match="more than once"):
        value_slider("t", ["1", "1"])
    with pytest.raises(ValueError, match="index must lie"):
        value_slider("t", ["1", "2"], index=2)
    with pytest.raises(ValueError, match="at least one"):
        value_slider("t", [])


def test_colorbar_html_draws_the_colour_map_and_its_range():
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    from unet_edu.widgets.frames import colorbar_html

    html = colorbar_html("viridis", -0.5, 2.0, "activation", max_width=300)
    assert to_hex(colormaps["viridis"](0.0)) in html and to_hex(colormaps["viridis"](1.0)) in html
    assert ">-0.5<" in html and ">2<" in html and "activation" in html and "300px" in html
    assert ">low<" in colorbar_html("gray", 0, 1, ends=("low", "high"))
    with pytest.raises(ValueError, match="must go up"):
        colorbar_html("gray", 1, 1)


def test_caption_heights_hold_the_longest_caption():
    from unet_edu.widgets.frames import lines_height, text_lines

    assert text_lines("short", 300) == 1
    long = "word " * 60
    assert text_lines(long, 300) > text_lines(long, 600) > 1
    assert text_lines("one<br>two", 300) == 2
    assert lines_height(["a", long], 300) == lines_height([long], 300)
    assert float(lines_height([long], 300)[:-2]) > float(lines_height(["a"], 300)[:-2])


def test_state_bytes_counts_the_pictures():
    from unet_edu.widgets.frames import state_bytes

    small = W.VBox([png_image(image_to_png(torch.zeros(4, 4)))])
    big = W.VBox([png_image(image_to_png(torch.rand(64, 64), scale=4))])
    assert 500 < state_bytes(small) < state_bytes(big)


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
    assert Image.open(io.BytesIO(compact_png(torch.ones(1, 1, 1, 1)))).size == (1, 1)


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
    from unet_edu.style import CMAPS
    from unet_edu.widgets.gates import GateExplorer, gate_frames

    model = AttentionUNet(features=(4, 8, 16))
    x = torch.rand(3, 1, 16, 16)
    masks = (x[:, 0] > 0.5).long()
    frames = gate_frames(model, x, masks)
    assert len(frames) == 3 and len(set(frames)) == 3
    w = GateExplorer(model, x, masks)
    slider, header, stack, note = w.children[:4]
    assert slider.max == 2 and header.value.count("gate, level") == 2
    assert "linear-gradient" in note.value and "gate value" in note.value
    assert CMAPS["gate"] == "magma"
    if IPYWIDGETS_8:
        assert stack.links[0].source == (slider, "value")
        assert [i.value for i in stack.children] == frames
    slider.value = 2  # the Python observer
    shown = stack.children[stack.selected_index] if IPYWIDGETS_8 else stack.children[0]
    assert shown.value == frames[2]
    with pytest.raises(ValueError, match="empty"):
        GateExplorer(model, x[:0])
    with pytest.raises(ValueError, match="one mask per image"):
        GateExplorer(model, x, masks[:2])
