"""DenoisingExplorer: watch a sampler turn noise into a digit, one step at a time.

For every step the explorer shows three pictures side by side: the current noisy image
``x_t``, the network's guess of the clean image ``x0`` at that step, and the noise ``eps`` it
predicts.  The step slider moves through precomputed frames, linked in the browser, so it also
works on the static website; the other controls (sampler, number of DDIM steps, class,
guidance scale, new seed) recompute the trajectory and need a live Python kernel.

The data path is plain functions, tested on their own:

* :func:`denoising_trajectory` runs :func:`~unet_edu.diffusion.ddim_sample` or
  :func:`~unet_edu.diffusion.ddpm_sample` with ``return_trajectory=True``;
* :func:`select_frames` picks at most ``max_frames`` evenly spaced steps of it (a 1,000-step
  DDPM run is shown through about 25 of its steps) and adds the final image;
* :func:`frame_png` draws one frame as a small PNG strip ``[x_t | x0 | eps]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as W
import torch

from ..diffusion import Trajectory, ddim_sample, ddpm_sample
from ..viz import image_to_png
from .frames import linked_stack, png_image

__all__ = ["DenoisingExplorer", "Frame", "denoising_trajectory", "select_frames", "frame_png"]

KERNEL_NOTE = "<i>(needs a live Python kernel: recomputes the trajectory)</i>"


@dataclass
class Frame:
    """One picture of the explorer: the step's timestep and three ``(H, W)`` images.

    ``t`` is the timestep the network saw (``None`` for the final image); ``xt`` the input of
    that step, ``x0`` the predicted clean image, ``eps`` the predicted noise (zeros for the final
    frame, where nothing is predicted any more).
    """

    index: int
    t: int | None
    xt: torch.Tensor
    x0: torch.Tensor
    eps: torch.Tensor


def denoising_trajectory(model, schedule, sampler: str = "ddim", steps: int = 20, label: int | None = 3,
                         guidance_scale: float = 2.0, seed: int = 0) -> Trajectory:
    """Sample one image and keep every step (``x_t``, predicted ``x0``, predicted ``eps``).

    ``sampler`` is ``"ddim"`` (deterministic, ``steps`` steps) or ``"ddpm"`` (all of the
    schedule's steps; ``steps`` is ignored).  ``label=None`` samples without a class.
    """
    sampler = sampler.lower()
    gen = torch.Generator().manual_seed(int(seed))
    y = None if label is None else torch.tensor([int(label)])
    kwargs = dict(y=y, guidance_scale=float(guidance_scale), generator=gen, return_trajectory=True,
                  progress=False)
    shape = (1, model.config["in_channels"], 28, 28)
    if sampler == "ddim":
        return ddim_sample(model, schedule, shape, steps=int(steps), **kwargs)
    if sampler == "ddpm":
        return ddpm_sample(model, schedule, shape, **kwargs)
    raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")


def select_frames(traj: Trajectory, max_frames: int = 25) -> list[Frame]:
    """At most ``max_frames`` frames: evenly spaced steps (first and last included) + the result."""
    n = len(traj.timesteps)
    if n == 0:
        raise ValueError("the trajectory has no steps: sample with return_trajectory=True")
    if max_frames < 2:
        raise ValueError(f"max_frames must be at least 2, got {max_frames}")
    k = min(n, max_frames - 1)
    picks = sorted(set(torch.linspace(0, n - 1, k).round().long().tolist()))
    frames = [Frame(i, traj.timesteps[i], traj.xt[i][0, 0], traj.x0_pred[i][0, 0], traj.eps_pred[i][0, 0])
              for i in picks]
    final = traj.xt[-1][0, 0]
    frames.append(Frame(n, None, final, final, torch.zeros_like(final)))
    return frames


def frame_png(frame: Frame, scale: int = 4) -> bytes:
    """``[x_t | x0 | eps]`` as one PNG: images in [-1, 1], noise in [-3, 3], 2-pixel gaps."""
    xt = (frame.xt.clamp(-1, 1) + 1) / 2
    x0 = (frame.x0.clamp(-1, 1) + 1) / 2
    eps = ((frame.eps.clamp(-3, 3) + 3) / 6) if frame.t is not None else torch.full_like(frame.eps, 0.5)
    gap = torch.ones(xt.shape[0], 2)
    strip = torch.cat([xt, gap, x0, gap, eps], dim=1)
    return image_to_png(strip, (0.0, 1.0), scale=scale)


def _caption(frame: Frame, total: int) -> str:
    if frame.t is None:
        return f"<b>after step {total} of {total}</b>: the final sample (no noise predicted any more)"
    return (f"<b>step {frame.index + 1} of {total}</b>, timestep t = {frame.t}: "
            f"x<sub>t</sub> &nbsp;|&nbsp; predicted x<sub>0</sub> &nbsp;|&nbsp; predicted noise")


class DenoisingExplorer(W.VBox):
    """x_t, predicted x0 and predicted noise along a DDPM or DDIM trajectory, with a step slider.

    ``model`` and ``schedule`` default to the shipped ``unet_edu.pretrained.load("digits-ddpm")``.
    The step slider works without a kernel (there is no play button: the html-manager that
    renders widgets on the static site cannot draw ipywidgets 8's Play widget); sampler, DDIM steps, class,
    guidance scale and "new seed" recompute the trajectory and need a live kernel.
    """

    def __init__(self, model=None, schedule=None, sampler: str = "ddim", steps: int = 20, label: int = 3,
                 guidance_scale: float = 2.0, seed: int = 0, max_frames: int = 25):
        if model is None or schedule is None:
            from ..pretrained import load

            loaded = load("digits-ddpm")
            model, schedule = loaded.model, loaded.schedule
        self.model, self.schedule, self.max_frames = model, schedule, max_frames
        self.seed = int(seed)
        self.sampler = W.ToggleButtons(options=[("DDIM", "ddim"), ("DDPM (1000 steps)", "ddpm")],
                                       value=sampler, description="sampler")
        self.steps = W.Dropdown(options=[10, 20, 50, 100], value=steps, description="DDIM steps")
        self.label = W.Dropdown(options=list(range(10)), value=label, description="class")
        self.guidance = W.FloatSlider(value=guidance_scale, min=0.0, max=5.0, step=0.5,
                                      description="guidance", continuous_update=False)
        self.new_seed = W.Button(description="new seed", icon="refresh")
        self.seed_text = W.HTML()
        self.step = W.IntSlider(value=0, min=0, max=1, description="frame", continuous_update=True)
        self.view = W.Box()
        self.frames: list[Frame] = []
        self.trajectory: Trajectory | None = None
        self.recompute()
        for control in (self.sampler, self.steps, self.label, self.guidance):
            control.observe(lambda change: self.recompute(), names="value")
        self.new_seed.on_click(self._on_new_seed)
        kernel = W.HTML(KERNEL_NOTE)
        super().__init__([
            W.HBox([self.sampler, kernel]),
            W.HBox([self.steps, self.label, self.guidance]),
            W.HBox([self.new_seed, self.seed_text, W.HTML(KERNEL_NOTE)]),
            W.HBox([self.step, W.HTML("<i>(works on the static page too)</i>")]),
            self.view,
        ])

    def _on_new_seed(self, _button=None):
        self.seed += 1
        self.recompute()

    def recompute(self):
        """Sample a new trajectory for the current controls and rebuild the frames."""
        self.trajectory = denoising_trajectory(self.model, self.schedule, self.sampler.value, self.steps.value,
                                               self.label.value, self.guidance.value, self.seed)
        self.frames = select_frames(self.trajectory, self.max_frames)
        total = len(self.trajectory.timesteps)
        children = [W.VBox([W.HTML(_caption(f, total)), png_image(frame_png(f))]) for f in self.frames]
        last = len(children) - 1
        self.step.value = min(self.step.value, last)
        self.step.max = last
        self.seed_text.value = f"seed {self.seed}"
        self.view.children = (linked_stack(children, self.step),)
        return self.frames
