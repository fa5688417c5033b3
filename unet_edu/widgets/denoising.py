"""DenoisingExplorer: watch a sampler turn noise into a digit, one step at a time.

Each frame shows three pictures side by side: the current noisy image ``x_t``, the network's
guess of the clean image ``x0`` at that step, and the noise ``eps`` it predicts.  Four controls
choose the frame: the class, the guidance scale, the number of DDIM steps and the position
along the trajectory.  Every combination on offer is sampled in advance (ten classes x a few
guidance scales x a few step counts, a handful of frames each) and the controls are linked to
nested stacks in the browser (:mod:`unet_edu.widgets.frames`), so every control works on the
static website too, and in Colab exactly as there.

The data path is plain functions, tested on their own:

* :func:`denoising_trajectory` runs :func:`~unet_edu.diffusion.ddim_sample` (or
  :func:`~unet_edu.diffusion.ddpm_sample`) with ``return_trajectory=True``, for one class or
  for a batch of classes at once;
* :func:`select_frames` picks at most ``max_frames`` evenly spaced steps of one sample and adds
  the final image;
* :func:`frame_png` draws one frame as a small PNG strip ``[x_t | x0 | eps]`` at 28x28 pixels
  per picture (the browser enlarges it);
* :func:`denoising_grid` samples every (class, guidance, steps) trajectory of the explorer.
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as W
import torch

from ..diffusion import Trajectory, ddim_sample, ddpm_sample
from .frames import compact_png, frame_image, frame_style, html_style, linked_stack

__all__ = ["DenoisingExplorer", "Frame", "denoising_trajectory", "select_frames", "frame_png",
           "denoising_grid", "STEP_COUNTS", "GUIDANCE_SCALES"]

STEP_COUNTS = (10, 20, 50)
GUIDANCE_SCALES = (0.0, 1.0, 4.0)  # label ignored, plain conditional, strong guidance
GAP = 1  # pixel between the three pictures of a strip (8 on the page, enlarged)
LEVELS = 8  # grey levels per picture: noise does not compress, 8 levels take half the bytes of 256
CSS_CLASS = "unet-edu-denoise"


@dataclass
class Frame:
    """One picture of the explorer: the step's timestep and three ``(H, W)`` images.

    ``index`` is the step's position in the trajectory (``total`` steps in all); ``t`` the
    timestep the network saw (``None`` for the final image); ``xt`` the input of that step,
    ``x0`` the predicted clean image, ``eps`` the predicted noise (zeros for the final frame,
    where nothing is predicted any more).
    """

    index: int
    t: int | None
    xt: torch.Tensor
    x0: torch.Tensor
    eps: torch.Tensor
    total: int = 0


def denoising_trajectory(model, schedule, sampler: str = "ddim", steps: int = 20, label=3,
                         guidance_scale: float = 2.0, seed: int = 0) -> Trajectory:
    """Sample and keep every step (``x_t``, predicted ``x0``, predicted ``eps``).

    ``sampler`` is ``"ddim"`` (deterministic, ``steps`` steps) or ``"ddpm"`` (all of the
    schedule's steps; ``steps`` is ignored).  ``label`` is one class, a list of classes (one
    sample per class, in one batch) or ``None`` (no class).  The same ``seed`` gives every
    sample the same starting noise whatever the other arguments.
    """
    sampler = sampler.lower()
    if sampler not in ("ddim", "ddpm"):
        raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
    labels = [label] if label is None or isinstance(label, int) else list(label)
    if not labels:
        raise ValueError("label is an empty list: give a class such as 3, or a list of classes")
    gen = torch.Generator().manual_seed(int(seed))
    y = None if labels == [None] else torch.tensor([int(c) for c in labels])
    kwargs = dict(y=y, guidance_scale=float(guidance_scale), generator=gen, return_trajectory=True,
                  progress=False)
    shape = (len(labels), model.config["in_channels"], 28, 28)
    if sampler == "ddim":
        return ddim_sample(model, schedule, shape, steps=int(steps), **kwargs)
    return ddpm_sample(model, schedule, shape, **kwargs)


def select_frames(traj: Trajectory, max_frames: int = 25, sample: int = 0) -> list[Frame]:
    """At most ``max_frames`` frames of sample ``sample`` of the batch: evenly spaced steps
    (the first included), then the result."""
    n = len(traj.timesteps)
    if n == 0:
        raise ValueError("the trajectory has no steps: sample with return_trajectory=True")
    if max_frames < 2:
        raise ValueError(f"max_frames must be at least 2, got {max_frames}")
    if not 0 <= sample < len(traj.x):
        raise ValueError(f"sample must lie in 0..{len(traj.x) - 1}, got {sample}")
    k = min(n, max_frames - 1)
    # Steps at the fractions 0, 1/k, ..., (k-1)/k of the way; the result is the last frame.
    picks = sorted(set(torch.linspace(0, n, k + 1)[:-1].round().long().tolist()))
    frames = [Frame(i, traj.timesteps[i], traj.xt[i][sample, 0], traj.x0_pred[i][sample, 0],
                    traj.eps_pred[i][sample, 0], n) for i in picks]
    final = traj.xt[-1][sample, 0]
    frames.append(Frame(n, None, final, final, torch.zeros_like(final), n))
    return frames


def frame_png(frame: Frame, scale: int = 1, levels: int = LEVELS) -> bytes:
    """``[x_t | x0 | eps]`` as one grey PNG: images in [-1, 1], noise in [-3, 3], white gaps.

    ``scale`` 1 keeps one PNG pixel per image pixel (the page enlarges it); larger values
    enlarge it here, for use outside a browser.
    """
    xt = (frame.xt.clamp(-1, 1) + 1) / 2
    x0 = (frame.x0.clamp(-1, 1) + 1) / 2
    if frame.t is None:
        eps = torch.full_like(frame.eps, 0.5)  # nothing predicted any more: flat grey
    else:
        eps = (frame.eps.clamp(-3, 3) + 3) / 6
    gap = torch.ones(xt.shape[0], GAP)
    strip = torch.cat([xt, gap, x0, gap, eps], dim=1)
    strip = strip.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    return compact_png(strip, (0.0, 1.0), levels=levels)


def denoising_grid(model, schedule, labels=tuple(range(10)), guidance_scales=GUIDANCE_SCALES,
                   step_counts=STEP_COUNTS, frames: int = 5, seed: int = 0) -> dict:
    """Every trajectory the explorer can show, as ``{(label, guidance, steps): [Frame, ...]}``.

    One batched DDIM run per (guidance, steps) samples all classes at once; each class starts
    from the same noise in every run, so only the controls change the picture.
    """
    for name, values in (("labels", labels), ("guidance_scales", guidance_scales),
                         ("step_counts", step_counts)):
        if len(values) == 0:
            raise ValueError(f"{name} is empty: give at least one value (the defaults are "
                             f"range(10), {GUIDANCE_SCALES}, {STEP_COUNTS})")
    grid = {}
    for scale in guidance_scales:
        for steps in step_counts:
            traj = denoising_trajectory(model, schedule, "ddim", steps, list(labels), scale, seed)
            for b, label in enumerate(labels):
                grid[(label, scale, steps)] = select_frames(traj, frames, sample=b)
    return grid


def _caption(frame: Frame) -> str:
    total = frame.total
    if frame.t is None:
        return f"<b>after step {total} of {total}</b>: the result"
    return f"<b>step {frame.index + 1} of {total}</b>, timestep t = {frame.t}"


def _index(options, value, name: str) -> int:
    try:
        return list(options).index(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not on offer; choose one of {list(options)} "
                         f"(or pass a grid that contains it)") from None


class DenoisingExplorer(W.VBox):
    """x_t, predicted x0 and predicted noise along DDIM trajectories, all controls precomputed.

    ``model`` and ``schedule`` default to the shipped ``unet_edu.pretrained.load("digits-ddpm")``.
    ``label``, ``guidance_scale`` and ``steps`` are the values shown first and must be on the
    grids ``labels``, ``guidance_scales`` and ``step_counts``; ``frames`` pictures are kept per
    trajectory (evenly spaced steps and the result).  Building it samples
    ``len(guidance_scales) * len(step_counts)`` batches of all classes (a few seconds per 100
    steps on a CPU); after that every control only switches between stored frames, with or
    without a kernel.
    """

    def __init__(self, model=None, schedule=None, *, label: int = 3, guidance_scale: float = 1.0,
                 steps: int = 20, labels=tuple(range(10)), guidance_scales=GUIDANCE_SCALES,
                 step_counts=STEP_COUNTS, frames: int = 5, seed: int = 0):
        if model is None or schedule is None:
            from ..pretrained import load

            loaded = load("digits-ddpm")
            model, schedule = loaded.model, loaded.schedule
        labels, counts = list(labels), list(step_counts)
        scales = [float(s) for s in guidance_scales]
        start = (_index(labels, label, "label"),
                 _index(scales, float(guidance_scale), "guidance_scale"),
                 _index(counts, steps, "steps"))
        if frames < 2:
            raise ValueError(f"frames must be at least 2 (a step and the result), got {frames}")
        if min(step_counts, default=frames) < frames - 1:
            raise ValueError(f"step_counts {list(step_counts)} must all be at least frames - 1 = "
                             f"{frames - 1}, so that every trajectory has {frames} frames; "
                             f"lower frames or drop the short step counts")
        self.labels, self.guidance_scales, self.step_counts = labels, scales, counts
        self.grid = denoising_grid(model, schedule, labels, scales, counts, frames, seed)
        self.pngs = {key: [frame_png(f) for f in fs] for key, fs in self.grid.items()}
        n_frames = len(next(iter(self.grid.values())))  # the same for every step count >= frames

        wide = W.Layout(width="100%", max_width="420px")
        self.label = W.Dropdown(options=labels, index=start[0], description="class", layout=wide)
        self.guidance = W.SelectionSlider(options=[(f"{s:g}", s) for s in scales], index=start[1],
                                          description="guidance", layout=wide,
                                          continuous_update=True)
        self.steps = W.Dropdown(options=[(f"DDIM, {n} steps", n) for n in counts], index=start[2],
                                description="sampler", layout=wide)
        self.step = W.IntSlider(value=n_frames // 2, min=0, max=n_frames - 1, description="frame",
                                layout=wide, continuous_update=True)
        self.view = self._build_view()
        header = W.HTML("x<sub>t</sub> (input of the step) &nbsp;|&nbsp; predicted x<sub>0</sub>"
                        " &nbsp;|&nbsp; predicted noise")
        super().__init__([self.label, self.guidance, self.steps, self.step, header,
                          self._build_captions(), self.view,
                          frame_style(CSS_CLASS, 3 * 28 * 8 + 2 * GAP * 8, 28 * 8)])

    def _build_view(self) -> W.Widget:
        # Nested stacks, one level per control: guidance > steps > frame > class.  The class
        # is the innermost level because it has the most values: fewer stacks in the page.
        # One layout model for all pictures, one for all stacks: a smaller page.  Stacks span
        # the column, so that a picture's box can take its width.
        shared, box = W.Layout(), W.Layout(width="100%")
        by_scale = []
        for scale in self.guidance_scales:
            by_steps = []
            for steps in self.step_counts:
                by_frame = []
                for k in range(len(self.pngs[(self.labels[0], scale, steps)])):
                    pictures = [frame_image(self.pngs[(c, scale, steps)][k], CSS_CLASS, shared)
                                for c in self.labels]
                    by_frame.append(linked_stack(pictures, self.label, "index", box))
                by_steps.append(linked_stack(by_frame, self.step, "value", box))
            by_scale.append(linked_stack(by_steps, self.steps, "index", box))
        return linked_stack(by_scale, self.guidance, "index", box)

    def _build_captions(self) -> W.Widget:
        # A caption depends on the step count and the frame only.
        style = html_style()  # shared, like the layout
        line = W.Layout(height="1.8em", overflow="hidden")  # one line: no jump between frames
        pages = []
        for steps in self.step_counts:
            frames = self.grid[(self.labels[0], self.guidance_scales[0], steps)]
            texts = [W.HTML(_caption(f), layout=line, style=style) for f in frames]
            pages.append(linked_stack(texts, self.step, "value", line))
        return linked_stack(pages, self.steps, "index", line)

    def shown_key(self) -> tuple:
        """``(label, guidance, steps, frame)`` that the controls select now."""
        return (self.labels[self.label.index], self.guidance_scales[self.guidance.index],
                self.step_counts[self.steps.index], self.step.value)

    def shown_png(self) -> bytes:
        """The PNG strip the controls select now."""
        label, scale, steps, k = self.shown_key()
        return self.pngs[(label, scale, steps)][k]
