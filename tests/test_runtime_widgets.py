import ipywidgets as W
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
