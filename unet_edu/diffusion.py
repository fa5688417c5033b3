"""The maths of denoising diffusion: noise schedules, the training loss, and two samplers.

Notation (Ho et al., 2020): ``beta_t`` is the variance added at step ``t``, ``alpha_t = 1 -
beta_t`` and ``alpha_bar_t = prod_{s<=t} alpha_s``.  The forward process jumps straight to any
step::

    x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * eps,    eps ~ N(0, I)

and the network ``eps_theta(x_t, t)`` learns to predict ``eps``.  Sampling runs the process
backwards, with the stochastic DDPM sampler (all ``T`` steps) or the deterministic DDIM sampler
(Song et al., 2021; any subset of steps).  Both can return the whole trajectory — ``x_t``, the
predicted ``x_0`` and the predicted noise at every step — which the denoising explorer shows.

Timesteps are 0-based here: ``t = 0`` is the first noising step and ``t = T - 1`` the last.
Random numbers are drawn on the CPU from an optional :class:`torch.Generator` and then moved
to the model's device, so a seed gives the same samples on every device.

The samplers never return NaN without a word: a batch that cannot fit in memory is refused
before anything is allocated, and samples that came out NaN or infinite raise a
:class:`FloatingPointError` that says at which step and why (damaged weights, an overflowing
guidance scale, half precision).  The check runs on the device during the loop and is read
once at the end, so sampling never waits for the GPU at each step.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .progress import Progress
from .runtime import eval_mode

__all__ = [
    "NoiseSchedule",
    "q_sample",
    "diffusion_loss",
    "guided_eps",
    "ddpm_sample",
    "ddim_sample",
    "ddim_timesteps",
    "ddpm_step",
    "ddim_step",
    "Trajectory",
]


def _is_real(value) -> bool:
    """A finite Python or NumPy number (not a bool, not NaN or infinity)."""
    try:
        return not isinstance(value, bool) and math.isfinite(value)
    except TypeError:
        return False


def _check_whole(name: str, value, minimum: int) -> int:
    """``value`` must be a whole number (an int, or a float like 50.0) of at least ``minimum``."""
    if not _is_real(value) or value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}; use {name}=int(...)")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _one_integer_per_image(v, batch: int, where: str, what: str, fix_dtype: str,
                           expected: str, fix_shape: str = "") -> torch.Tensor:
    """``v`` as ``batch`` integers, one per image (a single number stands for every image)."""
    v = torch.as_tensor(v)
    if v.is_floating_point() or v.dtype == torch.bool or v.is_complex():
        raise ValueError(f"{where}: {what} must be integers, got dtype {v.dtype}; {fix_dtype}")
    if v.dim() == 0:
        v = v.expand(batch)
    if v.shape != (batch,):
        raise ValueError(f"{where}: {expected}, got shape {tuple(v.shape)}"
                         + (f"; {fix_shape}" if fix_shape else ""))
    return v


def _check_timestep_tensor(t, batch: int, num_steps: int, where: str) -> torch.Tensor:
    """``t``: integer timesteps in ``[0, num_steps)``, a number or one per image."""
    t = _one_integer_per_image(t, batch, where, "timesteps t",
                               "use t.long() (or torch.randint for random steps)",
                               f"t must be one timestep per image, shape ({batch},)")
    if batch and (t.min() < 0 or t.max() > num_steps - 1):
        raise ValueError(
            f"{where}: timesteps must lie in 0..{num_steps - 1} for this {num_steps}-step "
            f"schedule, got {t.min().item()}..{t.max().item()}; 0 is the first noising step "
            f"and {num_steps - 1} the last (negative indices are not allowed)")
    return t


def _check_model_schedule(model, schedule: "NoiseSchedule", where: str) -> None:
    """A time-conditioned model must have been built for the schedule's number of steps."""
    if not isinstance(schedule, NoiseSchedule):
        raise ValueError(f"{where}: schedule must be a NoiseSchedule, got "
                         f"{type(schedule).__name__}")
    cfg = getattr(model, "config", {})
    n = cfg.get("num_timesteps")
    if n is not None and cfg.get("time_conditioning", True) and n != schedule.num_steps:
        raise ValueError(
            f"{where}: the model was built for num_timesteps={n} but the schedule has "
            f"{schedule.num_steps} steps, so its time embedding would be read at the wrong "
            f"places; use NoiseSchedule(..., num_steps={n}) or build the model with "
            f"num_timesteps={schedule.num_steps}")


def _check_labels(model, y, batch: int, where: str, fix_batch: str) -> torch.Tensor:
    """Class labels: integers, one per image (or one for all), in ``0..num_classes``."""
    n = getattr(model, "config", {}).get("num_classes")
    if not n:
        raise ValueError(
            f"{where}: got class labels y, but the model is unconditional (num_classes="
            f"{n!r}); call it without y, or train a model built with num_classes=<classes>")
    y = _one_integer_per_image(y, batch, where, "class labels y",
                               "values would be truncated; use y.long()",
                               f"y must hold one label per image, {batch} in all", fix_batch)
    if batch and (y.min() < 0 or y.max() > n):
        raise ValueError(f"{where}: labels must lie in 0..{n - 1} (or {n} for 'no label'), got "
                         f"{y.min().item()}..{y.max().item()}")
    return y.long()


def _check_images(x0, model, where: str) -> torch.Tensor:
    """Clean images for the loss: a non-empty floating batch with finite values.

    A floating batch of another precision (float16, float64) is cast to the model's dtype, the
    way a data loader's output usually needs to be; integer images are an error because their
    scale (0..255?) is unknown.
    """
    if not isinstance(x0, torch.Tensor):
        raise ValueError(f"{where}: x0 must be a torch.Tensor of images, got {type(x0).__name__}")
    if x0.dim() < 2 or x0.shape[0] == 0:
        raise ValueError(f"{where}: x0 must be a non-empty batch of images (B, C, H, W), got "
                         f"shape {tuple(x0.shape)}")
    if not x0.is_floating_point():
        raise ValueError(
            f"{where}: x0 has dtype {x0.dtype}; diffusion works on float images in [-1, 1]: "
            f"use x0.float() / 255 * 2 - 1 for 8-bit images")
    param = next(model.parameters(), None)
    if param is not None and x0.dtype != param.dtype:
        x0 = x0.to(param.dtype)
    if not torch.isfinite(x0).all():
        bad = (~torch.isfinite(x0)).sum().item()
        raise ValueError(f"{where}: x0 contains {bad} NaN or infinite value(s); clean the data "
                         f"first (e.g. torch.nan_to_num or drop those images)")
    return x0


# The smallest positive float32 (a subnormal): a smaller alpha_bar is 0 in float32 arithmetic.
_SMALLEST_FLOAT32 = 2.0 ** -149


class NoiseSchedule:
    """The variances ``beta_t`` of the forward process and the quantities derived from them.

    ``kind="linear"``: ``beta`` rises linearly from ``beta_start=1e-4`` to ``beta_end=0.02``
    (DDPM).  ``kind="cosine"``: ``alpha_bar_t = f(t)/f(0)`` with ``f(t) = cos^2(((t/T + s) /
    (1 + s)) * pi/2)``, ``s = 0.008``, and ``beta_t`` clipped at 0.999 (Nichol & Dhariwal, 2021),
    which destroys information more evenly over ``t``.

    All tensors are float64 on the CPU; :meth:`at` gathers values for a batch of timesteps and
    casts them to the batch's device and dtype.  A schedule whose ``alpha_bar`` underflows to 0
    in float32 (e.g. ``beta_end=0.9999``) is refused: nothing can be sampled from it.
    """

    def __init__(self, kind: str = "linear", num_steps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02, cosine_s: float = 0.008):
        num_steps = _check_whole("num_steps", num_steps, 1)
        # Every beta must be a variance in (0, 1), else alpha_bar leaves (0, 1] and the
        # square roots of q_sample turn into NaN.
        for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
            if not _is_real(value) or not 0 < value < 1:
                raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}; "
                                 f"the DDPM values are beta_start=1e-4, beta_end=0.02")
        if not _is_real(cosine_s) or cosine_s <= 0:
            raise ValueError(f"cosine_s must be a small positive offset, got {cosine_s!r}; "
                             f"the usual value is 0.008")
        self.kind = kind
        self.num_steps = num_steps
        if kind == "linear":
            betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        elif kind == "cosine":
            steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
            f = torch.cos((steps + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
            alpha_bar = f / f[0]
            betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
        else:
            raise ValueError(f"kind must be 'linear' or 'cosine', got {kind!r}")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        lost = (self.alphas_cumprod < _SMALLEST_FLOAT32).nonzero()
        if len(lost):
            k = int(lost[0])
            raise ValueError(
                f"this {kind} schedule destroys the signal completely: alpha_bar falls to "
                f"{self.alphas_cumprod[k].item():.3g} at step {k} of {num_steps}, which is 0 in "
                f"float32, so the samplers' division by sqrt(alpha_bar) would give infinity; "
                f"use a smaller beta_end (DDPM's is 0.02), fewer steps, or kind='cosine'")
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        # Variance of the true posterior q(x_{t-1} | x_t, x_0), used by the DDPM sampler.
        self.posterior_variance = betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)

    def __repr__(self) -> str:
        return f"NoiseSchedule(kind={self.kind!r}, num_steps={self.num_steps})"

    def at(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``values[t]`` shaped ``(B, 1, 1, 1)`` on ``like``'s device and dtype."""
        out = values[t.long().cpu()].to(device=like.device, dtype=like.dtype)
        return out.view(-1, *([1] * (like.dim() - 1)))

    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)`` per step."""
        return self.alphas_cumprod / (1 - self.alphas_cumprod)

    def q_sample(self, x0, t, noise=None, generator=None):
        """Shorthand for :func:`q_sample` with this schedule."""
        return q_sample(self, x0, t, noise, generator)

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert the forward process: ``x0 = (x_t - sqrt(1 - a_bar) eps) / sqrt(a_bar)``."""
        a = self.at(self.alphas_cumprod, t, x_t)
        return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def _randn(shape, like: torch.Tensor | None = None, device=None, generator=None, dtype=torch.float32):
    """Standard normal noise drawn on the CPU (reproducible everywhere) and moved to ``device``."""
    if like is not None:
        shape, device, dtype = like.shape, like.device, like.dtype
    return torch.randn(shape, generator=generator, dtype=dtype).to(device)


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise=None, generator=None):
    """Draw ``x_t ~ q(x_t | x_0)``: ``sqrt(a_bar_t) x0 + sqrt(1 - a_bar_t) noise``.

    ``t`` holds integer timesteps in ``0..T-1`` (a number, or one per image); a float or
    negative ``t`` is an error rather than a silently rounded or wrapped index.
    """
    t = _check_timestep_tensor(t, x0.shape[0], schedule.num_steps, "q_sample")
    if noise is None:
        noise = _randn(None, like=x0, generator=generator)
    a = schedule.at(schedule.alphas_cumprod, t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def diffusion_loss(model, schedule: NoiseSchedule, x0: torch.Tensor,
                   y=None, *, generator=None,
                   p_uncond: float = 0.1,
                   reduction: str = "mean") -> torch.Tensor:
    """The DDPM training objective: MSE between the true and the predicted
    noise.

    A timestep is drawn uniformly for each image.  For a class-conditional
    model (``y`` given), each label is replaced by the null class with
    probability ``p_uncond``, so the same network also learns the
    unconditional prediction that classifier-free guidance needs (Ho &
    Salimans, 2022).  ``reduction="none"`` returns one loss per image (to
    plot loss against t).

    ``x0`` must be a non-empty float batch without NaN/inf
    (float16/float64 are cast to the model's dtype); ``y`` integer labels;
    ``p_uncond`` in [0, 1]; the model must have been built for
    ``schedule.num_steps`` timesteps.  Anything else is a ``ValueError``
    naming the fix.
    """
    _check_model_schedule(model, schedule, "diffusion_loss")
    if reduction not in ("mean", "none"):
        raise ValueError(
            f"diffusion_loss: reduction must be 'mean' or 'none', got "
            f"{reduction!r}; for a sum use reduction='none' and .sum()")
    if not _is_real(p_uncond) or not 0 <= p_uncond <= 1:
        raise ValueError(
            f"diffusion_loss: p_uncond is a probability and must lie in "
            f"[0, 1], got {p_uncond!r}; 0.1 is usual")
    x0 = _check_images(x0, model, "diffusion_loss")
    if y is not None:
        y = _check_labels(
            model, y, x0.shape[0], "diffusion_loss",
            "pass the labels that belong to the images").to(x0.device)
    b = x0.shape[0]
    t = torch.randint(0, schedule.num_steps, (b,), generator=generator)
    noise = _randn(None, like=x0, generator=generator)
    x_t = q_sample(schedule, x0, t, noise)
    if y is not None:
        num_classes = model.config["num_classes"]
        drop = torch.rand(b, generator=generator) < p_uncond
        y = torch.where(drop.to(y.device),
                        torch.full_like(y, num_classes), y)
    eps = (model(x_t, t.to(x0.device), y) if y is not None
           else model(x_t, t.to(x0.device)))
    loss = F.mse_loss(eps, noise, reduction="none").flatten(1).mean(1)
    return loss.mean() if reduction == "mean" else loss


def guided_eps(model, x_t, t, y=None, guidance_scale: float = 1.0, context=None) -> torch.Tensor:
    """Predicted noise, with classifier-free guidance when ``y`` is given and scale != 1.

    ``eps = eps_uncond + s * (eps_cond - eps_uncond)``: ``s = 1`` is the plain conditional model,
    ``s > 1`` pushes samples towards what makes them look like their class (sharper, less
    varied), ``s = 0`` ignores the label.  Both predictions come from one batched call.
    """
    if y is not None and not getattr(model, "config", {}).get("num_classes"):
        raise ValueError("guided_eps: got class labels y, but the model is unconditional; "
                         "call it without y (guidance needs a class-conditional model)")
    kwargs = {} if context is None else {"context": context}
    if y is None:
        return model(x_t, t, **kwargs)
    if guidance_scale == 1.0:
        return model(x_t, t, y, **kwargs)
    null = torch.full_like(y, model.config["num_classes"])
    both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, null]),
                 **({} if context is None else {"context": torch.cat([context, context])}))
    eps_cond, eps_uncond = both.chunk(2)
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


@dataclass
class Trajectory:
    """What a sampler produced: the final images and, if asked for, every step on the way.

    ``timesteps[i]`` is the step that produced ``xt[i + 1]`` from ``xt[i]``; ``xt[0]`` is the
    starting noise and ``xt[-1] == x``.  ``x0_pred[i]`` and ``eps_pred[i]`` are the network's
    estimates of the clean image and of the noise at ``xt[i]``.  Stored tensors are on the CPU.
    """

    x: torch.Tensor
    timesteps: list[int] = field(default_factory=list)
    xt: list[torch.Tensor] = field(default_factory=list)
    x0_pred: list[torch.Tensor] = field(default_factory=list)
    eps_pred: list[torch.Tensor] = field(default_factory=list)


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _check_sampler_args(model, schedule, shape, y, guidance_scale, where: str) -> None:
    """What both samplers need: a matching schedule, a sensible shape, labels that fit the
    model and the batch, and a finite guidance scale.

    Label counts are checked against the caller's batch ``shape[0]``, not against the doubled
    batch that guidance runs internally.  Returns the shape as a tuple of ints (``8.0`` and
    NumPy integers are whole numbers too).
    """
    _check_model_schedule(model, schedule, where)
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or len(shape) < 2:
        raise ValueError(f"{where}: shape must be the batch shape (B, C, H, W), got {shape!r}")
    shape = tuple(_check_whole(f"shape[{i}]", n, 1) for i, n in enumerate(shape))
    if not _is_real(guidance_scale):
        raise ValueError(f"{where}: guidance_scale must be a finite number, got "
                         f"{guidance_scale!r}; 1.0 means no guidance, 2 to 4 is typical")
    if y is not None:
        n = shape[0]
        _check_labels(model, y, n, where,
                      f"pass one label (used for all) or {n}, or change the batch size in shape")
    return shape


def _prepare_labels(y, n: int, device):
    if y is None:
        return None
    y = torch.as_tensor(y, dtype=torch.long)
    return (y.expand(n) if y.dim() == 0 else y).to(device)


def _memory_of(device: torch.device) -> int:
    """The total memory of ``device`` in bytes (0 when unknown)."""
    try:
        if device.type == "cuda":
            return torch.cuda.get_device_properties(device).total_memory
        if device.type == "cpu":
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError, RuntimeError):
        pass
    return 0


def _check_memory(model, shape, dtype, guided: bool, kept_steps: int, where: str) -> None:
    """Refuse a batch that cannot fit before anything is allocated.

    The estimate is a lower bound: the images, the noise and the estimates the loop keeps, the
    output of the network's first convolution and the next layer's (a U-Net keeps the first as
    a skip while it computes the second), twice over with guidance; and, with
    ``return_trajectory``, three copies of the batch per step on the CPU.  So a refused batch
    could never have fitted; one that passes may still run out of memory deeper in the network,
    which :func:`_run_sampler` reports the same way.
    """
    dev = _model_device(model)
    size = torch.empty((), dtype=dtype).element_size()
    batch, pixels = shape[0], math.prod(shape[2:])
    image = math.prod(shape[1:]) * size
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    width = conv.out_channels if conv is not None else 0
    need = batch * (4 * image + 2 * (2 if guided else 1) * width * pixels * size)
    total = _memory_of(dev)
    if total and need > total:
        most = max(1, int(batch * total / need / 2))
        raise MemoryError(
            f"{where}: a batch of {batch} images of shape {tuple(shape[1:])} needs at least "
            f"{need / 2**30:.1f} GiB on the {dev.type} device, which has {total / 2**30:.1f} GiB "
            f"in all; draw them in batches of at most about {most:,} and torch.cat the results")
    kept = batch * 3 * image * kept_steps
    total = _memory_of(torch.device("cpu"))
    if total and kept > total:
        raise MemoryError(
            f"{where}: return_trajectory keeps three copies of the batch for each of "
            f"{kept_steps} steps, at least {kept / 2**30:.1f} GiB, and this machine has "
            f"{total / 2**30:.1f} GiB; leave return_trajectory off, or keep it for a few images")


def _is_out_of_memory(err: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    text = str(err).lower()
    return isinstance(err, oom) or "out of memory" in text or "can't allocate memory" in text


def _why_not_finite(model, schedule, guidance_scale, clip_x0, step: int, dtype) -> str:
    """The likeliest reason why the samples of a sampler came out NaN or infinite."""
    params = list(model.named_parameters())
    dev = _model_device(model)
    ok = torch.stack([torch.isfinite(p).all().to(dev) for _, p in params]).tolist()
    bad = [name for (name, _), good in zip(params, ok) if not good]
    if bad:
        return (f"the model's weights hold NaN or infinite values ({', '.join(bad[:3])}), so "
                f"every prediction is NaN: load good weights")
    if dtype == torch.float16:
        return ("the model runs in float16, which overflows above 65504: sample in float32 "
                "(model.float()) or bfloat16")
    if not clip_x0 and abs(guidance_scale) > 10:
        return (f"guidance_scale={guidance_scale:g} multiplies the difference of two noise "
                f"predictions, and with clip_x0=False nothing bounds the image estimate, so it "
                f"grows without limit: use clip_x0=True or a scale of 1 to 10 (2 to 4 is typical)")
    if abs(guidance_scale) > 1e6:
        return (f"guidance_scale={guidance_scale:g} is so large that the guided noise "
                f"prediction overflows: use a scale of 1 to 10 (2 to 4 is typical)")
    a_min = schedule.alphas_cumprod.min().item()
    if a_min < 1e-30:
        return (f"the schedule's alpha_bar falls to {a_min:.3g}, and dividing by its square "
                f"root overflows: use a schedule with a smaller beta_end")
    return (f"the network's prediction or the update overflowed (guidance_scale="
            f"{guidance_scale:g}, clip_x0={clip_x0}); check the model on this input, or use "
            f"clip_x0=True and a smaller guidance scale")


def _run_sampler(model, shape, timesteps, update, *, y, guidance_scale, context, generator,
                 return_trajectory, progress, desc, schedule, clip_x0, where) -> Trajectory:
    """The loop both samplers share: start from noise, and at each timestep predict the noise
    (with guidance) and let ``update(i, step, x, eps)`` return ``(x_next, x0)``.

    The starting noise has the model's dtype (float32 noise for a float32 model, as always).
    Whether ``x`` is still finite is tracked on the device and read once after the loop.
    """
    dev = _model_device(model)
    param = next(model.parameters())
    guided = y is not None and guidance_scale != 1.0
    _check_memory(model, shape, param.dtype, guided,
                  len(timesteps) + 1 if return_trajectory else 0, where)
    try:
        x = _randn(shape, device=dev, generator=generator, dtype=param.dtype)
        y = _prepare_labels(y, shape[0], dev)
        traj = Trajectory(x=x)
        if return_trajectory:
            traj.xt.append(x.cpu())
        first_bad = torch.full((), -1, device=dev)  # the first step whose output is not finite
        with eval_mode(model):
            bar = Progress(len(timesteps), desc, enabled=progress)
            for i, step in enumerate(timesteps):
                t = torch.full((shape[0],), step, device=dev, dtype=torch.long)
                eps = guided_eps(model, x, t, y, guidance_scale, context)
                x, x0 = update(i, step, x, eps)
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(x).all(),
                                        torch.full_like(first_bad, i), first_bad)
                if return_trajectory:
                    traj.timesteps.append(step)
                    traj.xt.append(x.cpu())
                    traj.x0_pred.append(x0.cpu())
                    traj.eps_pred.append(eps.cpu())
                bar.update()
            bar.close()
    except RuntimeError as err:
        if not _is_out_of_memory(err):
            raise
        raise MemoryError(
            f"{where}: ran out of memory for a batch of {shape[0]} images of shape "
            f"{tuple(shape[1:])} on {dev}; draw them in smaller batches (e.g. "
            f"{max(1, shape[0] // 4)} at a time) and torch.cat the results") from err
    k = int(first_bad)
    if k >= 0:
        count = int((~torch.isfinite(x)).sum())
        raise FloatingPointError(
            f"{where}: the samples became NaN or infinite at timestep {timesteps[k]} (step "
            f"{k + 1} of {len(timesteps)}; {count} values in the end): "
            + _why_not_finite(model, schedule, guidance_scale, clip_x0, timesteps[k],
                              param.dtype))
    traj.x = x
    return traj


def ddpm_step(x_t, eps, a_bar: float, a_bar_prev: float, beta: float,
              noise=None, clip_x0: bool = True):
    """One step of ancestral sampling: ``(x_{t-1}, x0)`` from ``x_t`` and
    the predicted noise.

    ``a_bar``, ``a_bar_prev`` and ``beta`` are ``alpha_bar_t``,
    ``alpha_bar_{t-1}`` (1 at the first step) and ``beta_t`` as numbers;
    ``noise`` is standard normal noise shaped like ``x_t``, or ``None`` at
    the last step (``t = 0``), which returns the posterior mean.
    """
    # x0 from the predicted noise: Ho et al. (2020), eq. 15.
    x0 = (x_t - math.sqrt(1 - a_bar) * eps) / math.sqrt(a_bar)
    if clip_x0:
        # the data lies in [-1, 1]; early estimates overshoot
        x0 = x0.clamp(-1, 1)
    # Mean and variance of the posterior q(x_{t-1} | x_t, x0):
    # Ho et al. (2020), eq. 6-7.
    mean = (math.sqrt(a_bar_prev) * beta / (1 - a_bar)) * x0 + (
        math.sqrt(1 - beta) * (1 - a_bar_prev) / (1 - a_bar)) * x_t
    if noise is None:
        return mean, x0
    variance = beta * (1 - a_bar_prev) / (1 - a_bar)
    return mean + math.sqrt(variance) * noise, x0


@torch.no_grad()
def ddpm_sample(model, schedule: NoiseSchedule, shape, *, y=None, guidance_scale: float = 1.0,
                context=None, generator=None, clip_x0: bool = True, return_trajectory: bool = False,
                progress: bool = True, steps: int | None = None) -> Trajectory:
    """Ancestral sampling (Ho et al., 2020): all ``T`` steps, fresh noise at each one.

    Each step is :func:`ddpm_step`: predict ``x0`` from ``x_t`` (clipped to [-1, 1] when
    ``clip_x0``) and sample ``x_{t-1}`` from the Gaussian posterior ``q(x_{t-1} | x_t, x0)``.
    ``steps`` may be given for symmetry with :func:`ddim_sample`, but DDPM always visits every
    step of the schedule, so it must then equal ``schedule.num_steps``; fewer steps are what
    :func:`ddim_sample` is for (``eta=1`` gives DDPM-like noise).
    """
    shape = _check_sampler_args(model, schedule, shape, y, guidance_scale, "ddpm_sample")
    if steps is not None and (not _is_real(steps) or steps != schedule.num_steps):
        raise ValueError(
            f"ddpm_sample: steps={steps!r}, but DDPM visits all {schedule.num_steps} steps of "
            f"the schedule; for {steps} steps use ddim_sample(..., steps={steps}) (eta=1.0 for "
            f"DDPM-like noise), or leave steps out")
    s = schedule

    def update(i, step, x, eps):
        noise = _randn(None, like=x, generator=generator) if step > 0 else None
        return ddpm_step(x, eps, s.alphas_cumprod[step].item(), s.alphas_cumprod_prev[step].item(),
                         s.betas[step].item(), noise, clip_x0)

    return _run_sampler(model, shape, range(s.num_steps - 1, -1, -1), update, y=y,
                        guidance_scale=guidance_scale, context=context, generator=generator,
                        return_trajectory=return_trajectory, progress=progress, desc="DDPM",
                        schedule=s, clip_x0=clip_x0, where="ddpm_sample")


SPACINGS = ("trailing", "linspace", "leading")


def ddim_timesteps(num_steps: int, steps: int, spacing: str = "trailing") -> list[int]:
    """The ``steps`` timesteps a few-step sampler visits, largest first.

    Three ways of choosing them are in use (Lin et al., 2024, table 2), shown for
    ``num_steps=1000, steps=5``:

    * ``"trailing"`` (the default): count back from the last step in equal strides,
      ``999, 799, 599, 399, 199``.  The first call sees pure noise at ``t = T - 1``, and no
      call is spent at ``t = 0``, where the image is already clean.
    * ``"linspace"``: spread over ``[0, T - 1]`` including both ends and round,
      ``999, 749, 500, 250, 0`` (the DDIM paper's uniform choice, up to rounding).
    * ``"leading"``: multiples of the stride from 0, ``800, 600, 400, 200, 0``.  It never
      visits the noisiest step, so sampling starts from noise the model was trained to see
      at a lower noise level.

    After the last timestep the samplers jump to ``alpha_bar = 1`` (a clean image), whichever
    spacing is used.
    """
    steps = _check_whole("steps", steps, 0)  # the range check below names the allowed range
    if not 1 <= steps <= num_steps:
        raise ValueError(f"steps must lie in 1..{num_steps}, got {steps}")
    if spacing == "trailing":
        stride = num_steps / steps
        ts = [round(num_steps - i * stride) - 1 for i in range(steps)]
    elif spacing == "linspace":
        ts = torch.linspace(0, num_steps - 1, steps, dtype=torch.float64).round().long().tolist()
    elif spacing == "leading":
        ts = [i * (num_steps // steps) for i in range(steps)]
    else:
        raise ValueError(f"spacing must be one of {', '.join(map(repr, SPACINGS))}, got "
                         f"{spacing!r}; 'trailing' is the default and the best with few steps")
    return sorted(set(ts), reverse=True)


def ddim_step(x_t, eps, a_bar: float, a_bar_prev: float, eta: float = 0.0,
              noise=None, clip_x0: bool = True):
    """One DDIM step from ``alpha_bar = a_bar`` to ``a_bar_prev``: returns
    ``(x_prev, x0)``.

    ``a_bar_prev`` belongs to the next timestep of the (possibly skipping)
    schedule, 1 after the last one.  ``eta = 0`` is deterministic;
    ``eta > 0`` needs ``noise`` shaped like ``x_t``.
    """
    x0 = (x_t - math.sqrt(1 - a_bar) * eps) / math.sqrt(a_bar)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
        # keep eps consistent with x0
        eps = (x_t - math.sqrt(a_bar) * x0) / math.sqrt(1 - a_bar)
    # Song et al. (2021), eq. 16: the noise level; eta = 1 gives DDPM's
    # posterior variance.
    sigma = eta * math.sqrt((1 - a_bar_prev) / (1 - a_bar)
                            * (1 - a_bar / a_bar_prev))
    # Song et al. (2021), eq. 12: predicted x0, the direction pointing to
    # x_t, random noise.
    x_prev = (math.sqrt(a_bar_prev) * x0
              + math.sqrt(max(1 - a_bar_prev - sigma**2, 0.0)) * eps)
    if sigma > 0:
        if noise is None:
            raise ValueError(
                f"ddim_step with eta={eta} needs noise shaped like x_t")
        x_prev = x_prev + sigma * noise
    return x_prev, x0


@torch.no_grad()
def ddim_sample(model, schedule: NoiseSchedule, shape, steps: int = 50, eta: float = 0.0, *, y=None,
                guidance_scale: float = 1.0, context=None, generator=None, clip_x0: bool = True,
                spacing: str = "trailing", return_trajectory: bool = False,
                progress: bool = True) -> Trajectory:
    """DDIM sampling (Song et al., 2021) on a subset of ``steps`` timesteps.

    With ``eta=0`` the update (:func:`ddim_step`) is deterministic: the same starting noise
    always gives the same image, and 50 steps come close to 1000-step DDPM.  ``eta=1`` adds
    DDPM-like noise; ``eta`` must lie in [0, 1] (values above 1 add more noise than DDPM and are
    refused too).  ``spacing`` chooses which timesteps are visited (:func:`ddim_timesteps`).
    """
    shape = _check_sampler_args(model, schedule, shape, y, guidance_scale, "ddim_sample")
    if not _is_real(eta) or not 0 <= eta <= 1:
        raise ValueError(f"ddim_sample: eta must lie in [0, 1] (0 deterministic, 1 DDPM-like), "
                         f"got {eta!r}")
    ts = ddim_timesteps(schedule.num_steps, steps, spacing)
    a_bars = schedule.alphas_cumprod

    def update(i, step, x, eps):
        a_prev = a_bars[ts[i + 1]].item() if i + 1 < len(ts) else 1.0
        noise = _randn(None, like=x, generator=generator) if eta > 0 and i + 1 < len(ts) else None
        return ddim_step(x, eps, a_bars[step].item(), a_prev, eta, noise, clip_x0)

    return _run_sampler(model, shape, ts, update, y=y, guidance_scale=guidance_scale, context=context,
                        generator=generator, return_trajectory=return_trajectory, progress=progress,
                        desc=f"DDIM-{steps}", schedule=schedule, clip_x0=clip_x0,
                        where="ddim_sample")
