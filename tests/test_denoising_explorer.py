"""The denoising explorer's data path: trajectories, frame selection, PNG frames, the widget."""

import json

import ipywidgets as W
import pytest
import torch

from unet_edu.diffusion import NoiseSchedule
from unet_edu.models import DiffusionUNet
from unet_edu.widgets import IPYWIDGETS_8
from unet_edu.widgets.denoising import (GAP, DenoisingExplorer, denoising_grid,
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
                             guidance_scales=(0.0, 1.0, 3.0), step_counts=(3, 5, 10), frames=4)


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


def test_ddpm_frames_are_subsampled(tiny):
    traj = denoising_trajectory(*tiny, sampler="ddpm", label=None, seed=0)
    assert len(traj.timesteps) == 50
    frames = select_frames(traj, max_frames=11)
    assert len(frames) == 11
    assert frames[0].t == 49 and frames[1].index == 5 and frames[-1].t is None
    assert torch.equal(frames[-1].xt, traj.x[0, 0].cpu())
    ts = [f.t for f in frames[:-1]]
    assert ts == sorted(ts, reverse=True)


def test_short_trajectory_keeps_every_step(tiny):
    traj = denoising_trajectory(*tiny, sampler="ddim", steps=5, seed=0)
    assert [f.index for f in select_frames(traj, 25)] == [0, 1, 2, 3, 4, 5]


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
        DenoisingExplorer(*tiny, guidance_scale=2.0, guidance_scales=(0.0, 1.0))
    with pytest.raises(ValueError, match="at least frames - 1"):
        DenoisingExplorer(*tiny, steps=2, step_counts=(2,), frames=4)


def test_frame_png_is_small_and_at_its_own_resolution(tiny):
    import io

    from PIL import Image

    frames = select_frames(denoising_trajectory(*tiny, steps=4), 25)
    png = frame_png(frames[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 1_500
    assert Image.open(io.BytesIO(png)).size == (3 * 28 + 2 * GAP, 28)
    assert Image.open(io.BytesIO(frame_png(frames[1], scale=3))).size == (3 * (84 + 2 * GAP), 84)


def test_the_grid_covers_every_control_value(explorer):
    e = explorer
    expected = {(c, s, n) for c in range(10) for s in (0.0, 1.0, 3.0) for n in (3, 5, 10)}
    assert set(e.grid) == expected
    assert all(len(frames) == 4 for frames in e.grid.values())
    assert [f.total for f in e.grid[(0, 0.0, 10)]] == [10] * 4
    assert list(e.label.options) == list(range(10)) and len(e.guidance.options) == 3
    assert [v for _, v in e.steps.options] == [3, 5, 10] and e.step.max == 3
    assert e.shown_key() == (2, 1.0, 5, 2)


def test_every_control_changes_the_shown_picture(explorer):
    e = explorer
    moves = ((e.label, "index", 7), (e.guidance, "index", 2), (e.steps, "index", 2),
             (e.step, "value", 0))
    for control, trait, other in moves:
        before, old = e.shown_png(), getattr(control, trait)
        setattr(control, trait, other)
        assert e.shown_png() != before, f"{control.description} did not change the picture"
        setattr(control, trait, old)


def _leaves(widget, path=()):
    """(path of child indices, Image) for every picture under nested stacks."""
    if isinstance(widget, W.Image):
        return [(path, widget)]
    return [leaf for i, child in enumerate(widget.children) for leaf in _leaves(child, path + (i,))]


@pytest.mark.skipif(not IPYWIDGETS_8, reason="Stack and browser links need ipywidgets 8")
def test_every_control_is_linked_to_a_level_of_the_view(explorer):
    e = explorer
    top = e.view
    assert isinstance(top, W.Stack) and top.links[0].source == (e.guidance, "index")
    second = top.children[1]
    assert second.links[0].source == (e.steps, "index")
    third = second.children[2]
    assert third.links[0].source == (e.step, "value") and len(third.children) == 4
    fourth = third.children[3]
    assert fourth.links[0].source == (e.label, "index") and len(fourth.children) == 10
    # the picture at each path is the one its control values name
    for (s, n, k, c), image in _leaves(top):
        key = (c, e.guidance_scales[s], e.step_counts[n])
        assert image.value == e.pngs[key][k]
    assert len(_leaves(top)) == 10 * 3 * 3 * 4
    # captions follow the step count and the frame
    captions = e.children[5]
    assert captions.links[0].source == (e.steps, "index")
    assert captions.children[0].links[0].source == (e.step, "value")


def test_the_saved_page_payload_stays_under_budget(tiny):
    from ipywidgets.embed import dependency_state, embed_data

    e = DenoisingExplorer(*tiny, steps=10, step_counts=(10, 20, 50))  # the book's grid, 5 frames
    state = json.dumps(embed_data(views=[e], state=dependency_state([e]))["manager_state"])
    pictures = sum(len(p) for frames in e.pngs.values() for p in frames)
    assert len(e.pngs) == 90
    # Chapter 5's page must stay under 1.5 MB; its figures are separate files, its text and
    # other widgets take about 250 kB, so the explorer gets at most 900 kB.  An untrained
    # network predicts noise everywhere, the worst case for compression (the shipped model's
    # explorer takes about 770 kB).
    assert len(state) < 900_000, f"the explorer adds {len(state)} bytes to the page"
    assert pictures < 500_000
