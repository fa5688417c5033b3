"""The denoising explorer's data path: trajectories, frame selection, PNG frames, the widget."""

import pytest
import torch

from unet_edu.diffusion import NoiseSchedule
from unet_edu.models import DiffusionUNet
from unet_edu.widgets.denoising import DenoisingExplorer, denoising_trajectory, frame_png, select_frames


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = DiffusionUNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_classes=10,
                          norm_groups=4, num_heads=2, num_timesteps=50).eval()
    return model, NoiseSchedule("cosine", 50)


def test_ddim_trajectory_layout(tiny):
    traj = denoising_trajectory(*tiny, sampler="ddim", steps=10, label=4, seed=1)
    assert len(traj.timesteps) == 10 and len(traj.xt) == 11
    assert len(traj.x0_pred) == len(traj.eps_pred) == 10
    assert traj.timesteps[0] == 49 and traj.timesteps[-1] == 0
    assert torch.equal(traj.xt[-1], traj.x.cpu())
    again = denoising_trajectory(*tiny, sampler="ddim", steps=10, label=4, seed=1)
    assert torch.equal(traj.x, again.x)  # DDIM with a fixed seed is deterministic


def test_ddpm_frames_are_subsampled(tiny):
    traj = denoising_trajectory(*tiny, sampler="ddpm", label=None, seed=0)
    assert len(traj.timesteps) == 50
    frames = select_frames(traj, max_frames=12)
    assert len(frames) == 12
    assert frames[0].t == 49 and frames[-2].t == 0 and frames[-1].t is None
    assert torch.equal(frames[-1].xt, traj.x[0, 0].cpu())
    ts = [f.t for f in frames[:-1]]
    assert ts == sorted(ts, reverse=True)


def test_short_trajectory_keeps_every_step(tiny):
    traj = denoising_trajectory(*tiny, sampler="ddim", steps=5, seed=0)
    assert [f.index for f in select_frames(traj, 25)] == [0, 1, 2, 3, 4, 5]


def test_bad_arguments(tiny):
    with pytest.raises(ValueError):
        denoising_trajectory(*tiny, sampler="euler")
    traj = denoising_trajectory(*tiny, steps=3)
    with pytest.raises(ValueError):
        select_frames(traj, 1)


def test_frame_png_is_small(tiny):
    frames = select_frames(denoising_trajectory(*tiny, steps=4), 25)
    png = frame_png(frames[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 10_000


def test_widget_recomputes(tiny):
    w = DenoisingExplorer(*tiny, steps=10, label=2, max_frames=8)
    assert len(w.frames) == 8 and w.step.max == 7
    w.step.value = 7
    w.steps.value = 20
    assert len(w.trajectory.timesteps) == 20 and w.step.max == 7
    old = w.trajectory.x.clone()
    w.new_seed.click()
    assert w.seed == 1 and not torch.equal(old, w.trajectory.x)
    w.sampler.value = "ddpm"
    assert len(w.trajectory.timesteps) == 50
