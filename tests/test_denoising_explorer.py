"""The denoising explorer's data path: trajectories, frames, PNG strips, the widget and its size."""

import io

import ipywidgets as W
import pytest
import torch
from PIL import Image

from unet_edu.diffusion import NoiseSchedule, Trajectory
from unet_edu.models import DiffusionUNet
from unet_edu.widgets import IPYWIDGETS_8
from unet_edu.widgets.denoising import (GAP, DenoisingExplorer, _check_run, denoising_grid,
                                        denoising_trajectory, frame_png, select_frames)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = DiffusionUNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_classes=10,
                          norm_groups=4, num_heads=2, num_timesteps=50).eval()
    return model, NoiseSchedule("cosine", 50)


@pytest.fixture(scope="module")
def explorer(tiny):
    return DenoisingExplorer(*tiny, label=2, guidance_scale=1.0, steps=5, labels=range(10),
                             guidance_scales=(0.0, 1.0, 3.0))


def test_ddim_trajectory_layout(tiny):
    traj = denoising_trajectory(*tiny, sampler="ddim", steps=10, label=4, seed=1)
    assert len(traj.timesteps) == 10 and len(traj.xt) == 11
    assert len(traj.x0_pred) == len(traj.eps_pred) == 10
    assert traj.timesteps[0] == 49 and traj.timesteps[-1] == 4  # trailing spacing
    assert torch.equal(traj.xt[-1], traj.x.cpu())
    again = denoising_trajectory(*tiny, sampler="ddim", steps=10, label=4, seed=1)
    assert torch.equal(traj.x, again.x)  # DDIM with a fixed seed is deterministic


def test_a_batch_of_classes_starts_from_the_same_noise_per_class(tiny):
    batch = denoising_trajectory(*tiny, steps=4, label=[1, 7], guidance_scale=3.0, seed=5)
    other = denoising_trajectory(*tiny, steps=8, label=[1, 7], guidance_scale=0.0, seed=5)
    assert batch.x.shape[0] == 2 and torch.equal(batch.xt[0], other.xt[0])
    with pytest.raises(ValueError, match="empty list"):
        denoising_trajectory(*tiny, label=[])


def test_every_step_is_kept_unless_asked_otherwise(tiny):
    traj = denoising_trajectory(*tiny, sampler="ddim", steps=20, seed=0)
    frames = select_frames(traj, schedule=tiny[1])
    assert [f.index for f in frames] == list(range(21))
    assert [f.t for f in frames[:-1]] == traj.timesteps and frames[-1].t is None
    assert frames[0].alpha_bar == pytest.approx(float(tiny[1].alphas_cumprod[49]))
    assert frames[-1].alpha_bar == 1.0
    assert select_frames(traj)[0].alpha_bar is None  # no schedule, no alpha_bar


def test_ddpm_frames_are_subsampled(tiny):
    traj = denoising_trajectory(*tiny, sampler="ddpm", label=None, seed=0)
    assert len(traj.timesteps) == 50
    frames = select_frames(traj, max_frames=11)
    assert len(frames) == 11
    assert frames[0].t == 49 and frames[1].index == 5 and frames[-1].t is None
    assert torch.equal(frames[-1].xt, traj.x[0, 0].cpu())
    ts = [f.t for f in frames[:-1]]
    assert ts == sorted(ts, reverse=True)


def test_bad_arguments(tiny):
    with pytest.raises(ValueError, match="sampler"):
        denoising_trajectory(*tiny, sampler="euler")
    traj = denoising_trajectory(*tiny, steps=3)
    with pytest.raises(ValueError, match="max_frames"):
        select_frames(traj, 1)
    with pytest.raises(ValueError, match="sample must lie"):
        select_frames(traj, 4, sample=1)
    with pytest.raises(ValueError, match="labels is empty"):
        denoising_grid(*tiny, labels=())
    with pytest.raises(ValueError, match="guidance_scale=2.0 is not on offer"):
        DenoisingExplorer(*tiny, steps=2, guidance_scale=2.0, guidance_scales=(0.0, 1.0))
    with pytest.raises(ValueError, match="frames must be a whole number"):
        DenoisingExplorer(*tiny, steps=2, frames=1)
    with pytest.raises(ValueError, match=r"steps must be a whole number in 1\.\.50"):
        DenoisingExplorer(*tiny, steps=51)


def test_frame_png_is_small_and_at_its_own_resolution(tiny):
    frames = select_frames(denoising_trajectory(*tiny, steps=4))
    png = frame_png(frames[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 1_500
    assert Image.open(io.BytesIO(png)).size == (3 * 28 + 2 * GAP, 28)
    assert Image.open(io.BytesIO(frame_png(frames[1], scale=3))).size == (3 * (84 + 2 * GAP), 84)
    # x_t is drawn from -2.5 to 2.5, so pure noise at the first step is not clipped
    noise = Image.open(io.BytesIO(frame_png(frames[0]))).convert("L")
    xt = noise.crop((0, 0, 28, 28)).tobytes()
    assert sum(v in (0, 255) for v in xt) < 0.1 * len(xt)


def test_the_grid_has_every_class_and_scale_and_guidance_0_is_shared(explorer):
    e = explorer
    assert set(e.grid) == {(c, s, 0.0) for c in range(10) for s in (0.0, 1.0, 3.0)}
    assert all(len(frames) == 6 for frames in e.grid.values())  # 5 steps and the result
    shared = e.grid[(0, 0.0, 0.0)]
    assert all(e.grid[(c, 0.0, 0.0)] is shared for c in range(10))  # one run serves every class
    starts = [e.grid[(c, 1.0, 0.0)][0].xt for c in range(10)]
    assert all(torch.equal(s, starts[0]) for s in starts)  # every class from the same noise
    finals = {bytes(e.pngs[(c, 1.0, 0.0)][-1]) for c in range(10)}
    assert len(finals) == 10  # ... and the class decides what comes out
    assert e.shown_key() == (2, 1.0, 0.0, 3)


def test_controls_show_the_quantities_they_change(explorer):
    e = explorer
    ts = [str(f.t) for f in e.grid[(0, 1.0, 0.0)][:-1]]
    assert [label for label, _ in e.step.options] == ts + ["result"]
    assert e.step.description == "t" and "frame" not in e.step.description
    assert [label for label, _ in e.guidance.options] == ["0", "1", "3"]
    assert [label for label, _ in e.label.options] == [str(c) for c in range(10)]


def test_every_control_changes_the_shown_picture(explorer):
    e = explorer
    moves = ((e.label, "index", 7), (e.guidance, "index", 2), (e.step, "index", 0))
    for control, trait, other in moves:
        before, old = e.shown_png(), getattr(control, trait)
        setattr(control, trait, other)
        assert e.shown_png() != before, f"{control.description} did not change the picture"
        setattr(control, trait, old)
    e.guidance.index = 0  # guidance 0: the class is ignored
    before = e.shown_png()
    e.label.index = 5
    assert e.shown_png() == before
    e.guidance.index, e.label.index = 1, 2


def _leaves(widget, path=()):
    """(path of child indices, Image) for every picture under nested stacks."""
    if isinstance(widget, W.Image):
        return [(path, widget)]
    return [leaf for i, child in enumerate(getattr(widget, "children", ()))
            for leaf in _leaves(child, path + (i,))]


@pytest.mark.skipif(not IPYWIDGETS_8, reason="Stack and browser links need ipywidgets 8")
def test_every_control_is_linked_to_a_level_of_the_view(explorer):
    e = explorer
    top = e.view
    assert isinstance(top, W.Stack) and top.links[0].source == (e.guidance, "index")
    by_class = top.children[1]
    assert by_class.links[0].source == (e.label, "index") and len(by_class.children) == 10
    steps = by_class.children[4]
    assert steps.links[0].source == (e.step, "index") and len(steps.children) == 6
    # guidance 0: one stack of steps, not one per class
    assert top.children[0].links[0].source == (e.step, "index")
    for (s, c, k), image in _leaves(top)[6:]:  # past the shared guidance-0 run
        assert image.value == e.pngs[(c, e.guidance_scales[s], 0.0)][k]
    assert len(_leaves(top)) == 6 + 2 * 10 * 6


def test_python_observers_switch_the_view_without_the_browser(tiny):
    e = DenoisingExplorer(*tiny, steps=3, labels=(0, 1), guidance_scales=(1.0, 2.0), label=0)
    e.guidance.index, e.label.index, e.step.index = 1, 1, 0
    shown = e.view
    for _ in range(3):  # follow the visible child of each level down to the picture
        shown = (shown.children[shown.selected_index] if IPYWIDGETS_8 else shown.children[0])
    assert isinstance(shown, W.Image) and shown.value == e.shown_png()


def _visible(stack):
    return stack.children[stack.selected_index] if IPYWIDGETS_8 else stack.children[0]


def test_captions_name_the_step_and_have_one_height(explorer):
    e = explorer
    texts, heights = [], set()
    for k in range(len(e.step.options)):
        e.step.index = k
        texts.append(_visible(e.captions).value)
        heights.add(_visible(e.captions).layout.height)
    e.step.index = 3
    assert "t = 49" in texts[0] and "the result" in texts[-1]
    assert len(heights) == 1 and heights.pop().endswith("em")
    e.guidance.index = 0
    assert "Guidance 0" in _visible(e.notes).value and "ignored" in _visible(e.notes).value
    e.guidance.index = 1


def test_eta_is_a_control_when_more_than_one_value_is_on_offer(tiny):
    e = DenoisingExplorer(*tiny, steps=4, labels=(0, 1), guidance_scales=(0.0, 1.0), label=1,
                          etas=(0.0, 1.0))
    assert e.eta in e.children and [t for t, _ in e.eta.options] == ["0", "1"]
    assert set(e.grid) == {(c, s, eta) for c in (0, 1) for s in (0.0, 1.0) for eta in (0.0, 1.0)}
    # Same starting noise; at eta = 1 fresh noise along the way changes the path.
    assert torch.equal(e.grid[(1, 1.0, 0.0)][0].xt, e.grid[(1, 1.0, 1.0)][0].xt)
    assert not torch.equal(e.grid[(1, 1.0, 0.0)][-1].xt, e.grid[(1, 1.0, 1.0)][-1].xt)
    assert e.grid[(0, 0.0, 1.0)] is e.grid[(1, 0.0, 1.0)]  # guidance 0 still shared
    e.step.index = 4
    before = e.shown_png()
    e.eta.index = 1
    assert e.shown_png() != before and e.shown_key() == (1, 1.0, 1.0, 4)
    assert "fresh noise" in _visible(e.notes.children[1]).value
    shown = e.view  # eta > guidance > class > t, followed by the Python observers
    for _ in range(4):
        shown = _visible(shown)
    assert isinstance(shown, W.Image) and shown.value == e.shown_png()
    for bad in ((), (0.0, 1.5), ("a",)):
        with pytest.raises(ValueError, match="etas must be"):
            DenoisingExplorer(*tiny, steps=2, etas=bad)
    with pytest.raises(ValueError, match="eta=0.5 is not on offer"):
        DenoisingExplorer(*tiny, steps=2, etas=(0.0, 1.0), eta=0.5)


def test_an_unconditional_model_has_no_class_or_guidance_control():
    torch.manual_seed(0)
    model = DiffusionUNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, norm_groups=4,
                          num_heads=2, num_timesteps=20).eval()
    e = DenoisingExplorer(model, NoiseSchedule("cosine", 20), steps=4)
    assert e.label not in e.children and e.guidance not in e.children and e.step in e.children
    assert set(e.grid) == {(None, 1.0, 0.0)} and len(e.pngs[(None, 1.0, 0.0)]) == 5
    with pytest.raises(ValueError, match="unconditional"):
        DenoisingExplorer(model, NoiseSchedule("cosine", 20), steps=4, label=3)


def test_a_run_that_turns_nan_is_named():
    traj = Trajectory(x=torch.zeros(1, 1, 4, 4), timesteps=[9, 4], xt=[torch.zeros(1, 1, 4, 4)] * 3,
                      x0_pred=[torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), float("nan"))],
                      eps_pred=[torch.zeros(1, 1, 4, 4)] * 2)
    with pytest.raises(ValueError, match=r"step 2 \(t = 4\)"):
        _check_run(traj, "DenoisingExplorer")


def test_the_saved_page_payload_stays_under_budget(tiny):
    # The book's explorer: every step of a 20-step run, ten classes, three guidance scales.
    # Chapter 5's page must stay under 1.5 MB of HTML; its figures are separate files and its
    # text and other widgets take about 250 kB, so the explorer gets at most 900 kB.  An
    # untrained network predicts noise everywhere, the worst case for compression (the shipped
    # model's explorer takes about 750 kB).
    e = DenoisingExplorer(*tiny, steps=20)
    distinct = {id(v): v for v in e.pngs.values()}
    assert sum(len(v) for v in distinct.values()) == 21 * (1 + 2 * 10)
    size = e.state_bytes()
    assert size < 900_000, f"the explorer adds {size:,} bytes to the page"
