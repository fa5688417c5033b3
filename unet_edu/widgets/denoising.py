"""DenoisingExplorer: watch a sampler turn noise into a digit, one step at a time.

For every step of a DDIM run the explorer shows three large pictures side by side: ``x_t``,
the noisy image the network sees at timestep ``t``; the clean image ``x0`` that its prediction
implies; and the noise ``eps`` it predicts.  A slider runs over ``t`` itself (999, 949, ... and
then the result), a menu picks the class, a slider the guidance scale and, where more than one
is on offer, a slider DDIM's noise dial ``eta`` (0: the deterministic sampler; 1: fresh noise
at every step, as DDPM).  Every step of the run is kept: the digit appears gradually, and the
slider shows when.

Every class starts from the *same* noise, so what changes the digit is the class and the
guidance, nothing else.  At guidance 0 the class is ignored (the prediction is the
unconditional one), so one run serves every class: moving the class menu then changes nothing,
which is the lesson.  It also keeps the page small.

Each step is a small grey PNG at the pictures' own resolution (28 x 28 pixels each, 8 grey
levels), enlarged by the browser without smoothing (:mod:`unet_edu.widgets.frames`), and the
controls are linked to nested stacks in the browser, so every control works on the static
website too, and through Python observers in a live kernel.  A 20-step run of ten classes at
three guidance scales is 441 pictures and about 0.75 MB of page (0.83 MB for an untrained
model, whose noise compresses worst; :meth:`DenoisingExplorer.state_bytes`).

The data path is plain functions, tested on their own:

* :func:`denoising_trajectory` runs :func:`~unet_edu.diffusion.ddim_sample` (or
  :func:`~unet_edu.diffusion.ddpm_sample`) with ``return_trajectory=True``, for one class or
  for a batch of classes at once;
* :func:`select_frames` turns one sample of a trajectory into frames: every step and the
  result, or at most ``max_frames`` evenly spaced ones;
* :func:`frame_png` draws one frame as a small PNG strip ``[x_t | x0 | eps]``;
* :func:`denoising_grid` samples every (class, guidance, eta) trajectory of the explorer.
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as W
import torch

from ..diffusion import NoiseSchedule, Trajectory, ddim_sample, ddpm_sample
from ..models import DiffusionUNet
from ..style import CMAPS
from .frames import (caption_html, colorbar_html, compact_png, frame_image, frame_style,
                     html_style, lines_height, linked_stack, state_bytes, value_slider)
from .inputs import check_finite, check_model_finite

__all__ = ["DenoisingExplorer", "Frame", "denoising_trajectory", "select_frames", "frame_png",
           "denoising_grid", "GUIDANCE_SCALES", "XT_RANGE", "X0_RANGE", "EPS_RANGE"]

GUIDANCE_SCALES = (0.0, 1.0, 4.0)  # label ignored, plain conditional, strong guidance
GAP = 1  # pixel between the three pictures of a strip (8 on the page, enlarged)
LEVELS = 8  # grey levels per picture: noise does not compress, 8 levels take half the bytes of 256
ENLARGE = 8  # CSS pixels per picture pixel on a wide screen: 224 x 224 per picture
CSS_CLASS = "unet-edu-denoise"
# Value ranges of the three pictures.  x_t and the noise have unit variance at the start, so
# +-2.5 shows them unclipped (99% of the pixels); x0 is an image, in [-1, 1].
XT_RANGE = (-2.5, 2.5)
X0_RANGE = (-1.0, 1.0)
EPS_RANGE = (-2.5, 2.5)


@dataclass
class Frame:
    """One picture of the explorer: the step's timestep and three ``(H, W)`` images.

    ``index`` is the step's position in the trajectory (``total`` steps in all); ``t`` the
    timestep the network saw (``None`` for the final image); ``xt`` the input of that step,
    ``x0`` the predicted clean image, ``eps`` the predicted noise (zeros for the final frame,
    where nothing is predicted any more); ``alpha_bar`` the share of signal in ``x_t``'s
    variance (``None`` when not known, 1 for the result).
    """

    index: int
    t: int | None
    xt: torch.Tensor
    x0: torch.Tensor
    eps: torch.Tensor
    total: int = 0
    alpha_bar: float | None = None


def denoising_trajectory(model, schedule, sampler: str = "ddim", steps: int = 20, label=3,
                         guidance_scale: float = 2.0, seed: int = 0,
                         eta: float = 0.0) -> Trajectory:
    """Sample and keep every step (``x_t``, predicted ``x0``, predicted ``eps``).

    ``sampler`` is ``"ddim"`` (``steps`` steps; deterministic at ``eta=0``, with fresh noise
    at every step up to ``eta=1``) or ``"ddpm"`` (all of the schedule's steps; ``steps`` and
    ``eta`` are ignored).  ``label`` is one class, a list of classes (one
    sample per class, in one batch) or ``None`` (no class).  The same ``seed`` gives every
    sample the same starting noise whatever the other arguments; in a batch, each position
    has its own noise.
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
        return ddim_sample(model, schedule, shape, steps=int(steps), eta=float(eta), **kwargs)
    return ddpm_sample(model, schedule, shape, **kwargs)


def select_frames(traj: Trajectory, max_frames: int | None = None, sample: int = 0,
                  schedule: NoiseSchedule | None = None) -> list[Frame]:
    """The frames of sample ``sample`` of the batch: every step, then the result.

    ``max_frames`` keeps at most that many (evenly spaced steps, the first included, then the
    result), for long runs such as DDPM's thousand steps.  With ``schedule`` each frame knows
    its ``alpha_bar``.
    """
    n = len(traj.timesteps)
    if n == 0:
        raise ValueError("the trajectory has no steps: sample with return_trajectory=True")
    if max_frames is not None and max_frames < 2:
        raise ValueError(f"max_frames must be at least 2 (a step and the result), got "
                         f"{max_frames}; or None for every step")
    if not 0 <= sample < len(traj.x):
        raise ValueError(f"sample must lie in 0..{len(traj.x) - 1}, got {sample}")
    k = n if max_frames is None else min(n, max_frames - 1)
    # Steps at the fractions 0, 1/k, ..., (k-1)/k of the way; the result is the last frame.
    picks = sorted(set(torch.linspace(0, n, k + 1)[:-1].round().long().tolist()))

    def signal(t):
        return None if schedule is None else float(schedule.alphas_cumprod[t])

    frames = [Frame(i, traj.timesteps[i], traj.xt[i][sample, 0], traj.x0_pred[i][sample, 0],
                    traj.eps_pred[i][sample, 0], n, signal(traj.timesteps[i])) for i in picks]
    final = traj.xt[-1][sample, 0]
    frames.append(Frame(n, None, final, final, torch.zeros_like(final), n, 1.0))
    return frames


def frame_png(frame: Frame, scale: int = 1, levels: int = LEVELS) -> bytes:
    """``[x_t | x0 | eps]`` as one grey PNG, with white gaps.

    ``x_t`` and ``eps`` are drawn from -2.5 (black) to 2.5 (white), ``x0`` from -1 to 1
    (:data:`XT_RANGE`, :data:`X0_RANGE`, :data:`EPS_RANGE`); the final frame's noise is flat
    grey, nothing being predicted any more.  ``scale`` 1 keeps one PNG pixel per image pixel
    (the page enlarges it); larger values enlarge it here, for use outside a browser.
    """

    def unit(img, value_range):
        lo, hi = value_range
        return ((img.float() - lo) / (hi - lo)).clamp(0, 1)

    xt = unit(frame.xt, XT_RANGE)
    x0 = unit(frame.x0, X0_RANGE)
    if frame.t is None:
        eps = torch.full_like(xt, 0.5)  # nothing predicted any more: flat grey
    else:
        eps = unit(frame.eps, EPS_RANGE)
    gap = torch.ones(xt.shape[0], GAP)
    strip = torch.cat([xt, gap, x0, gap, eps], dim=1)
    strip = strip.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    return compact_png(strip, (0.0, 1.0), levels=levels)


def _check_run(traj: Trajectory, where: str) -> None:
    """A run whose predictions became NaN or infinite is an error naming the first bad step."""
    for i, (x0, eps) in enumerate(zip(traj.x0_pred, traj.eps_pred)):
        if not (torch.isfinite(x0).all() and torch.isfinite(eps).all()):
            raise ValueError(f"{where}: the model's noise prediction is NaN or infinite at step "
                             f"{i + 1} (t = {traj.timesteps[i]}): its weights are finite but "
                             f"its output overflows; check the model on one input, e.g. "
                             f"model(x, t), and retrain it if that is not finite")
    check_finite(traj.xt[-1], "the sampled image", where)


def denoising_grid(model, schedule, labels=tuple(range(10)), guidance_scales=GUIDANCE_SCALES,
                   steps: int = 20, frames: int | None = None, seed: int = 0,
                   etas=(0.0,)) -> dict:
    """Every trajectory the explorer can show, as ``{(label, guidance, eta): [Frame, ...]}``.

    One DDIM run of ``steps`` steps per class, guidance scale and ``eta``, every one from the
    same noise (``seed``; at ``eta > 0`` the noise added along the way is seeded too), so only
    the controls change the picture.  At guidance 0 the class is ignored, so one run (of the
    first class) serves every class: their entries are the same list.  ``labels`` may be
    ``(None,)`` for an unconditional model.
    """
    for name, values in (("labels", labels), ("guidance_scales", guidance_scales),
                         ("etas", etas)):
        if len(values) == 0:
            raise ValueError(f"{name} is empty: give at least one value (the defaults are "
                             f"range(10), {GUIDANCE_SCALES} and (0.0,))")
    grid = {}
    for eta in etas:
        for scale in guidance_scales:
            shared = None
            for label in labels:
                if shared is not None:  # guidance 0: the same run for every class
                    grid[(label, scale, eta)] = shared
                    continue
                traj = denoising_trajectory(model, schedule, "ddim", steps, label, scale, seed,
                                            eta)
                _check_run(traj, "DenoisingExplorer")
                grid[(label, scale, eta)] = select_frames(traj, frames, 0, schedule)
                if scale == 0 and label is not None:
                    shared = grid[(label, scale, eta)]
    return grid


def _caption(frame: Frame) -> str:
    total = frame.total
    if frame.t is None:
        return (f"<b>after step {total} of {total}</b>: the result. The predicted x<sub>0</sub> "
                f"of the last step is the sample.")
    signal = ("" if frame.alpha_bar is None else
              f", where {100 * frame.alpha_bar:.3g}% of the variance is signal "
              f"(ᾱ<sub>t</sub> = {frame.alpha_bar:.3g})")
    return (f"<b>step {frame.index + 1} of {total}</b>: x<sub>t</sub> at t = {frame.t}{signal}. "
            f"The network predicts its noise ε; removing that noise gives x<sub>0</sub>.")


def _guidance_note(scale: float, conditional: bool) -> str:
    if not conditional:
        return "An unconditional model: no class, no guidance."
    if scale == 0:
        return ("<b>Guidance 0</b>: the class is ignored (the unconditional prediction), so "
                "every class gives this same digit.")
    if scale == 1:
        return "<b>Guidance 1</b>: the class-conditional prediction, as trained."
    return (f"<b>Guidance {scale:g}</b>: the step away from the unconditional prediction, "
            f"towards the class, is made {scale:g} times as long.")


def _eta_note(eta: float) -> str:
    if eta == 0:
        return ("<b>η = 0</b>: deterministic DDIM; each step moves along one smooth path "
                "(the probability-flow ODE).")
    what = "as much fresh noise as DDPM" if eta == 1 else f"{eta:g} of DDPM's fresh noise"
    return f"<b>η = {eta:g}</b>: every step adds {what}, so the path jitters."


def _index(options, value, name: str) -> int:
    try:
        return list(options).index(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not on offer; choose one of {list(options)} "
                         f"(or add it to the {name}s on offer)") from None


def _whole(value, name: str, low: int, high: int | None = None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) or (
        isinstance(value, float) and value.is_integer())
    if not ok or value < low or (high is not None and value > high):
        span = f"{low}..{high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be a whole number in {span}, got {value!r}")
    return int(value)


class DenoisingExplorer(W.VBox):
    """``x_t``, predicted ``x0`` and predicted noise at every step of DDIM runs, precomputed.

    ``model`` and ``schedule`` are a :class:`~unet_edu.models.DiffusionUNet` and the
    :class:`~unet_edu.diffusion.NoiseSchedule` it was trained with; leave both out for the
    shipped ``unet_edu.pretrained.load("digits-ddpm")``.  ``steps`` is the length of the DDIM
    run (every step is shown; ``frames`` keeps at most that many, for long runs).

    For a class-conditional model, ``labels`` are the classes on offer (default: all) and
    ``guidance_scales`` the guidance scales (default 0, 1 and 4); ``label`` and
    ``guidance_scale`` are shown first (default 3 and 1).  An unconditional model has neither
    control.  ``etas`` are the values of DDIM's noise dial on offer (default ``(0.0,)``, the
    deterministic sampler, and no control; e.g. ``(0.0, 1.0)`` adds one), ``eta`` the one
    shown first.  Building it samples one run per class, guidance scale and eta (about ten
    seconds per eta for the shipped model on one CPU core); after that every control only
    switches between stored pictures, with or without a kernel.
    """

    def __init__(self, model=None, schedule=None, *, label: int | None = None,
                 guidance_scale: float | None = None, steps: int = 20, labels=None,
                 guidance_scales=None, frames: int | None = None, seed: int = 0,
                 etas=(0.0,), eta: float | None = None):
        where = "DenoisingExplorer"
        if model is None and schedule is None:
            from ..pretrained import load

            loaded = load("digits-ddpm")
            model, schedule = loaded.model, loaded.schedule
        elif model is None or schedule is None:
            given, missing = ("model", "schedule") if schedule is None else ("schedule", "model")
            raise ValueError(
                f"{where}: got a {given} but no {missing}; pass both, "
                f"DenoisingExplorer(model, schedule) with the NoiseSchedule the model was "
                f"trained with (e.g. NoiseSchedule('cosine', 1000)), or neither for the "
                f"shipped model")
        conditional = self._check_model(model, schedule, where)
        steps = _whole(steps, "steps", 1, schedule.num_steps)
        if frames is not None:
            frames = _whole(frames, "frames", 2)
        labels, scales, label, guidance_scale = self._choices(
            model, conditional, labels, guidance_scales, label, guidance_scale, where)
        etas = self._etas(etas, where)
        eta = etas[0] if eta is None else eta
        start = (_index(labels, label, "label"),
                 _index(scales, float(guidance_scale), "guidance_scale"),
                 _index(etas, float(eta), "eta"))
        self.labels, self.guidance_scales, self.conditional = labels, scales, conditional
        self.etas = etas
        self.grid = denoising_grid(model, schedule, labels, scales, steps, frames, seed, etas)
        # One PNG per distinct frame list (guidance 0 shares one list among all classes).
        by_list: dict[int, list[bytes]] = {}
        self.pngs = {key: by_list.setdefault(id(fs), [frame_png(f) for f in fs])
                     for key, fs in self.grid.items()}
        first = self.grid[(labels[0], scales[0], etas[0])]
        wide = W.Layout(width="100%", max_width="420px")
        self.label = W.Dropdown(options=[(str(c), c) for c in labels], index=start[0],
                                description="class", layout=wide)
        self.guidance = value_slider("guidance", [f"{s:g}" for s in scales], start[1], wide)
        self.eta = value_slider("η", [f"{e:g}" for e in etas], start[2], wide)
        self.step = value_slider("t", [("result" if f.t is None else str(f.t)) for f in first],
                                 len(first) // 2, wide)
        box_w = 3 * 28 * ENLARGE + 2 * GAP * ENLARGE
        controls = ([self.label] if len(labels) > 1 else []) + (
            [self.guidance] if len(scales) > 1 else []) + (
            [self.eta] if len(etas) > 1 else []) + [self.step]
        self.view = self._build_view()
        self.notes, self.captions = self._notes(box_w), self._captions(first, box_w)
        super().__init__(controls + [
            self.notes, self.captions, self._columns(box_w, _HEADERS),
            self.view, self._columns(box_w, self._scales()),
            frame_style(CSS_CLASS, box_w, 28 * ENLARGE)])

    # -- checks ------------------------------------------------------------------------------
    @staticmethod
    def _check_model(model, schedule, where: str) -> bool:
        if not isinstance(model, DiffusionUNet):
            raise ValueError(
                f"{where} needs a noise predictor that is told the timestep (a DiffusionUNet), "
                f"got {type(model).__name__}"
                + (", a segmentation network that never sees t"
                   if type(model).__name__ in ("UNet2015", "AttentionUNet", "UNetPlusPlus")
                   else "")
                + ": train a DiffusionUNet (chapter 5) or leave model and schedule out for "
                  "the shipped one")
        cfg = model.config
        if cfg.get("context_dim"):
            raise ValueError(f"{where}: this model needs a text context (context_dim="
                             f"{cfg['context_dim']}), which the explorer does not supply; use "
                             f"a class-conditional or unconditional DiffusionUNet")
        if cfg.get("label_dim"):
            raise ValueError(f"{where}: this model takes a label vector (label_dim="
                             f"{cfg['label_dim']}), which the explorer does not supply; use a "
                             f"class-conditional or unconditional DiffusionUNet")
        if not isinstance(schedule, NoiseSchedule):
            raise ValueError(f"{where}: schedule must be a NoiseSchedule, got "
                             f"{type(schedule).__name__}; e.g. NoiseSchedule('cosine', 1000)")
        n = cfg.get("num_timesteps")
        if cfg.get("time_conditioning", True) and n is not None and n != schedule.num_steps:
            raise ValueError(f"{where}: the model was built for num_timesteps={n} but the "
                             f"schedule has {schedule.num_steps} steps; pass the schedule it "
                             f"was trained with, NoiseSchedule(..., num_steps={n})")
        check_model_finite(model, "model", where)
        return bool(cfg.get("num_classes"))

    @staticmethod
    def _etas(etas, where) -> list[float]:
        try:
            etas = [float(e) for e in etas]
        except (TypeError, ValueError):
            raise ValueError(f"{where}: etas must be numbers in [0, 1], e.g. (0.0, 1.0), got "
                             f"{etas!r}") from None
        if not etas or any(not 0 <= e <= 1 for e in etas):
            raise ValueError(f"{where}: etas must be one or more numbers in [0, 1] (0: "
                             f"deterministic DDIM, 1: as much noise as DDPM), got {etas}")
        return etas

    @staticmethod
    def _choices(model, conditional, labels, scales, label, scale, where):
        if not conditional:
            given = [n for n, v in (("label", label), ("labels", labels), ("guidance_scale", scale),
                                    ("guidance_scales", scales)) if v is not None]
            if given:
                raise ValueError(f"{where}: the model is unconditional (num_classes=None), so it "
                                 f"has no classes and no guidance; leave out {', '.join(given)}")
            return [None], [1.0], None, 1.0
        n = model.config["num_classes"]
        labels = list(range(n)) if labels is None else list(labels)
        if not labels:
            raise ValueError(f"{where}: labels is empty; give the classes to offer, e.g. "
                             f"range({n})")
        bad = [c for c in labels if isinstance(c, bool) or not isinstance(c, int)
               or not 0 <= c < n]
        if bad:
            raise ValueError(f"{where}: labels {bad} are not classes of this model; use whole "
                             f"numbers in 0..{n - 1}")
        scales = list(GUIDANCE_SCALES if scales is None else scales)
        if not scales:
            raise ValueError(f"{where}: guidance_scales is empty; give e.g. {GUIDANCE_SCALES}")
        try:
            scales = [float(s) for s in scales]
        except (TypeError, ValueError):
            raise ValueError(f"{where}: guidance_scales must be numbers, got {scales!r}") from None
        if any(not s >= 0 or s == float("inf") for s in scales):
            raise ValueError(f"{where}: guidance scales must be finite and at least 0, got "
                             f"{scales}; 0 ignores the class, 1 is the plain model, 2 to 4 "
                             f"is typical guidance")
        label = (3 if 3 in labels else labels[0]) if label is None else label
        scale = (1.0 if 1.0 in scales else scales[0]) if scale is None else scale
        return labels, scales, label, scale

    # -- the view ----------------------------------------------------------------------------
    def _build_view(self) -> W.Widget:
        # Nested stacks, one level per control: eta > guidance > class > t.  The level with the
        # most values is innermost, so there are fewer stacks in the page.  At guidance 0 every
        # class shares one run: its page is that run's stack alone.  One layout model for all
        # pictures, one for all stacks: a smaller page.  Stacks span the column, so that a
        # picture's box can take its width.
        shared, box = W.Layout(), W.Layout(width="100%")
        by_eta = []
        for eta in self.etas:
            by_scale = []
            for scale in self.guidance_scales:
                steps_of = {}  # one stack of steps per distinct run
                by_label = []
                for label in self.labels:
                    pngs = self.pngs[(label, scale, eta)]
                    if id(pngs) not in steps_of:
                        pictures = [frame_image(p, CSS_CLASS, shared) for p in pngs]
                        steps_of[id(pngs)] = linked_stack(pictures, self.step, "index", box)
                    by_label.append(steps_of[id(pngs)])
                by_scale.append(by_label[0] if len(steps_of) == 1 else
                                linked_stack(by_label, self.label, "index", box))
            by_eta.append(linked_stack(by_scale, self.guidance, "index", box))
        return by_eta[0] if len(by_eta) == 1 else linked_stack(by_eta, self.eta, "index", box)

    def _captions(self, frames: list[Frame], width: int) -> W.Widget:
        # A caption depends on the step only (the same t for every class and guidance).
        style = html_style()  # shared, like the layout
        texts = [_caption(f) for f in frames]
        line = W.Layout(height=lines_height(texts, 330), overflow="hidden",
                        max_width=f"{width}px")
        pages = [W.HTML(caption_html(t), layout=line, style=style) for t in texts]
        return linked_stack(pages, self.step, "index", line)

    def _notes(self, width: int) -> W.Widget:
        def stack(texts, control):
            line = W.Layout(height=lines_height(texts, 330), overflow="hidden",
                            max_width=f"{width}px")
            style = html_style()
            pages = [W.HTML(caption_html(t), layout=line, style=style) for t in texts]
            return pages[0] if len(pages) == 1 else linked_stack(pages, control, "index", line)

        notes = stack([_guidance_note(s, self.conditional) for s in self.guidance_scales],
                      self.guidance)
        if len(self.etas) == 1:
            return notes
        return W.VBox([notes, stack([_eta_note(e) for e in self.etas], self.eta)])

    @staticmethod
    def _columns(width: int, cells: list[str]) -> W.HTML:
        """HTML cells over (or under) the three pictures, in columns of the pictures' widths."""
        picture, gap = 28 * ENLARGE, GAP * ENLARGE
        grid = (f"display: grid; grid-template-columns: {picture}fr {gap}fr {picture}fr {gap}fr "
                f"{picture}fr; max-width: {width}px; width: 100%; align-items: end; "
                f"text-align: center; line-height: 1.25")
        spaced = [cells[0], "", cells[1], "", cells[2]]
        return W.HTML(f'<div style="{grid}">' + "".join(f"<div>{c}</div>" for c in spaced)
                      + "</div>", layout=W.Layout(width="100%"))

    @staticmethod
    def _scales() -> list[str]:
        gray = CMAPS["image"]
        return [colorbar_html(gray, *XT_RANGE), colorbar_html(gray, *X0_RANGE),
                colorbar_html(gray, *EPS_RANGE)]

    # -- what is shown -------------------------------------------------------------------------
    def shown_key(self) -> tuple:
        """``(label, guidance, eta, step index)`` that the controls select now."""
        return (self.labels[self.label.index], self.guidance_scales[self.guidance.index],
                self.etas[self.eta.index], self.step.index)

    def shown_png(self) -> bytes:
        """The PNG strip the controls select now."""
        label, scale, eta, k = self.shown_key()
        return self.pngs[(label, scale, eta)][k]

    def state_bytes(self) -> int:
        """Bytes the explorer adds to a saved notebook or book page (its widget state)."""
        return state_bytes(self)


_HEADERS = ["x<sub>t</sub>: what the network sees", "x<sub>0</sub> it predicts",
            "noise ε it predicts"]
