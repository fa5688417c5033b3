"""Stable Diffusion in miniature: caption -> text encoder -> U-Net on latents -> decoder.

Latent diffusion (Rombach et al., 2022) runs the diffusion of chapter 5 on an autoencoder's
latents instead of on pixels, and conditions the U-Net on text through cross-attention:

* training (:func:`text_diffusion_loss`): encode a digit, sample its latent, multiply by
  the scale factor, add noise at a random step and ask the network for the noise, given the
  digit's caption; with probability ``p_uncond`` the caption is replaced by the null caption,
  so that the same network also learns the unconditional prediction;
* sampling (:func:`caption_sample`): DDIM in latent space with classifier-free guidance on
  the caption, ``eps = eps(null) + s (eps(caption) - eps(null))`` (Ho & Salimans, 2022,
  eq. 6), then divide by the scale factor and decode.

:class:`LatentDiffusion` holds the four parts (autoencoder, text-conditioned U-Net, noise
schedule, scale factor) with the caption tokenizer.  The measuring functions of chapter 7
live here too:

* does the caption control the picture?  :func:`prompt_study` samples prompts that differ in
  one word from the same starting noises and measures the digits drawn;
  :func:`prompt_effect` / :func:`prompt_effects` turn the paired measurements into effects
  with intervals and the book's three verdicts, :func:`class_agreement` checks the class;
* pixel against latent diffusion: :func:`step_cost` and :func:`compare_step_costs` measure
  the parts, :func:`sampling_cost` adds them up per digit, :func:`latent_sampler_score`
  scores the latent model as chapter 5 scored the pixel one, :func:`pixel_vs_latent` puts
  both side by side and :func:`matched_quality` compares them at equal Fréchet distance;
* where the words land: cross-attention maps (:class:`AttentionMaps`, kept by
  :func:`caption_sample` with ``keep_attention=True``);
* :func:`measure_studies` runs the prompt studies and the latent scores once, for the stored
  file that :func:`shipped_studies` reads (sampling them takes longer than a chapter may).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import captions as cap
from .blocks import MultiHeadAttention
from .diffusion import NoiseSchedule, ddim_step, ddim_timesteps, q_sample
from .runtime import eval_mode
from .text import null_tokens

__all__ = ["LatentDiffusion", "TextSamples", "AttentionMaps", "AttentionSite",
           "text_diffusion_loss", "caption_training_loss", "caption_sample", "prompt_study",
           "PromptEffect", "prompt_effect", "prompt_effects", "class_agreement", "step_cost",
           "compare_step_costs", "sampling_cost", "pixel_vs_latent", "matched_quality",
           "latent_sampler_score", "STUDY_DIGITS", "measure_studies", "studies_from_dict",
           "shipped_studies"]


def _check_guidance(value, where: str) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok:
        raise ValueError(f"{where}: guidance_scale must be a finite number, got {value!r}; 1.0 "
                         f"means no guidance, 0 ignores the caption, 2 to 5 is typical")
    return float(value)


def _check_probability(name: str, value, usual: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} is a probability and must lie in [0, 1], got {value!r}; "
                         f"{usual} is usual")
    return float(value)


def _check_tokens(model, tokens, batch: int, where: str) -> torch.Tensor:
    length = model.config["max_length"]
    if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.long \
            or tokens.shape != (batch, length):
        got = (f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, torch.Tensor)
               else type(tokens).__name__)
        raise ValueError(f"{where}: tokens must be int64 ids of shape ({batch}, {length}), one "
                         f"caption per latent, got {got}; use captions.tokenizer().encode(...)")
    vocab = model.config["vocab_size"]
    if batch and (tokens.min() < 0 or tokens.max() >= vocab):
        raise ValueError(f"{where}: token ids must lie in 0..{vocab - 1}, got "
                         f"{tokens.min().item()}..{tokens.max().item()}; encode the captions "
                         f"with the tokenizer the model was trained with")
    return tokens


def _check_schedule(model, schedule, where: str) -> None:
    if not isinstance(schedule, NoiseSchedule):
        raise ValueError(f"{where}: schedule must be a NoiseSchedule, got "
                         f"{type(schedule).__name__}")
    n = model.num_timesteps
    if n != schedule.num_steps:
        raise ValueError(f"{where}: the model was built for num_timesteps={n} but the schedule "
                         f"has {schedule.num_steps} steps; use NoiseSchedule(..., num_steps={n})")


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def text_diffusion_loss(model, schedule: NoiseSchedule, z0: torch.Tensor, tokens: torch.Tensor,
                        generator=None, p_uncond: float = 0.1) -> torch.Tensor:
    """The noise-prediction loss of a :class:`~unet_edu.models.TextConditionedUNet`.

    ``z0`` are scaled latents ``(B, 4, 8, 8)``; ``tokens`` their captions' ids.  Each caption
    is replaced by the null caption with probability ``p_uncond`` ("caption dropout"), which
    trains the unconditional prediction that classifier-free guidance subtracts.  All random
    numbers come from ``generator``.
    """
    _check_schedule(model, schedule, "text_diffusion_loss")
    p_uncond = _check_probability("p_uncond", p_uncond, "0.1")
    if not isinstance(z0, torch.Tensor) or z0.dim() != 4 or len(z0) == 0:
        got = tuple(z0.shape) if isinstance(z0, torch.Tensor) else type(z0).__name__
        raise ValueError(f"text_diffusion_loss: z0 must be a non-empty batch of latents "
                         f"(B, C, H, W), got {got}")
    b = len(z0)
    tokens = _check_tokens(model, tokens, b, "text_diffusion_loss")
    t = torch.randint(0, schedule.num_steps, (b,), generator=generator)
    noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype).to(z0.device)
    z_t = q_sample(schedule, z0, t, noise)
    drop = torch.rand(b, generator=generator) < p_uncond
    null = null_tokens(b, tokens.shape[1])
    tokens = torch.where(drop[:, None], null, tokens.cpu()).to(z0.device)
    eps = model(z_t, t.to(z0.device), tokens)
    return F.mse_loss(eps, noise)


def caption_training_loss(schedule: NoiseSchedule, scale_factor: float, p_uncond: float = 0.1,
                          p_word: float = 0.7):
    """The ``loss_fn`` for :func:`unet_edu.train.fit` on ``(mean, std, labels, bins)`` rows.

    ``mean``/``std`` are the digits' posterior latents (:func:`unet_edu.latent.encode_dataset`),
    ``labels`` their classes and ``bins`` their attribute bins
    (:func:`unet_edu.captions.attribute_bins`).  Every step samples fresh latents
    ``scale_factor * (mean + std * eps)`` and fresh true captions
    (:func:`unet_edu.captions.training_captions` keeps each attribute word with probability
    ``p_word``), then calls :func:`text_diffusion_loss`.
    """
    if not math.isfinite(scale_factor) or scale_factor <= 0:
        raise ValueError(f"scale_factor must be a positive number, got {scale_factor!r}; "
                         f"compute it with unet_edu.latent.latent_scale_factor")
    _check_probability("p_word", p_word, "0.7")
    tokenizer = cap.tokenizer()

    def loss_fn(model, batch, generator):
        mean, std, labels, bins = batch
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        z0 = scale_factor * (mean + std * eps)
        texts = cap.training_captions(labels.cpu(), bins.cpu(), generator, p_word)
        tokens = tokenizer.encode(texts).to(mean.device)
        return text_diffusion_loss(model, schedule, z0, tokens, generator, p_uncond)

    return loss_fn


# --------------------------------------------------------------------------------------------
# Cross-attention maps
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttentionSite:
    """One cross-attention layer of the U-Net: its module name, path, level and map side."""

    name: str
    path: str     # "down", "middle" or "up"
    level: int    # 0 = the top (full latent resolution)
    side: int     # the map is side x side latent positions


@dataclass
class AttentionMaps:
    """Cross-attention weights kept during sampling, one tensor per site.

    ``maps[i]`` belongs to ``sites[i]`` and has shape ``(steps, B, L, side, side)``: at each
    sampling step, for each sample and each token position, how much each latent position
    attends to that token (the conditional branch of guidance, averaged over heads).  At every
    position the weights over the ``L`` tokens add up to 1.  ``token_ids`` ``(B, L)`` are the
    captions' ids and ``tokens[b]`` sample ``b``'s tokens as text (``<start>``, the words,
    ``<end>``, ``<pad>``...; filled in by :meth:`LatentDiffusion.sample`), ``timesteps`` the
    sampling steps.
    """

    sites: list
    maps: list
    token_ids: torch.Tensor
    timesteps: list
    tokens: list = field(default_factory=list)

    def levels(self) -> list[int]:
        """The sides present, largest first (8, 4, 2 for the book's model)."""
        return sorted({s.side for s in self.sites}, reverse=True)

    def at_side(self, side: int) -> torch.Tensor:
        """The mean over every site of one resolution: ``(steps, B, L, side, side)``."""
        picked = [m for s, m in zip(self.sites, self.maps) if s.side == side]
        if not picked:
            raise ValueError(f"no cross-attention at side {side}; the sides are {self.levels()}")
        return torch.stack(picked).mean(0)

    def upsampled(self, size: int = 8) -> torch.Tensor:
        """Every resolution enlarged (nearest) to ``size`` and averaged, as in the
        "prompt-to-prompt" maps (Hertz et al., 2022): ``(steps, B, L, size, size)``."""
        maps = []
        for side in self.levels():
            m = self.at_side(side)
            s, b, n = m.shape[:3]
            up = F.interpolate(m.reshape(s * b, n, side, side), size=(size, size), mode="nearest")
            maps.append(up.reshape(s, b, n, size, size))
        return torch.stack(maps).mean(0)


def _cross_attention_sites(unet) -> list[tuple]:
    """``(path, level, name, module)`` of every cross-attention in a DiffusionUNet."""
    levels = unet.levels
    found = []
    for name, module in unet.named_modules():
        if not (isinstance(module, MultiHeadAttention) and module.is_cross):
            continue
        m = re.match(r"(down|up)\.(\d+)\.", name)
        if m:
            path = m.group(1)
            level = int(m.group(2)) if path == "down" else levels - 1 - int(m.group(2))
        else:
            path, level = "middle", levels - 1
        found.append((path, level, name, module))
    return found


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------
@dataclass
class TextSamples:
    """What :func:`caption_sample` returns.

    ``latents`` are the final scaled latents; ``timesteps`` the DDIM steps; with
    ``return_trajectory``, ``zt[i]`` is the input of step ``i`` and ``z0_pred[i]`` its
    predicted clean latent (both scaled, on the CPU); ``attention`` the cross-attention maps
    when kept.  :class:`LatentDiffusion` adds the decoded ``images`` in [-1, 1].
    """

    latents: torch.Tensor
    timesteps: list = field(default_factory=list)
    zt: list = field(default_factory=list)
    z0_pred: list = field(default_factory=list)
    attention: AttentionMaps | None = None
    images: torch.Tensor | None = None


def _check_clip(clip_z0, latent_shape, dev):
    """``clip_z0`` as two ``(1, C, 1, 1)`` tensors on ``dev``, or None."""
    if clip_z0 is None:
        return None
    c = latent_shape[0]
    bounds = torch.as_tensor(clip_z0, dtype=torch.float32)
    if bounds.shape != (2, c):
        problem = f"shape {tuple(bounds.shape)}"
    elif not torch.isfinite(bounds).all():
        problem = "NaN or infinite bounds"
    elif (bounds[0] >= bounds[1]).any():
        bad = (bounds[0] >= bounds[1]).nonzero().flatten().tolist()
        problem = f"low >= high in channels {bad}"
    else:
        problem = None
    if problem:
        raise ValueError(f"caption_sample: clip_z0 must be [low, high] per latent channel, a "
                         f"(2, {c}) tensor with low < high, got {problem}; use "
                         f"unet_edu.latent.latent_range(autoencoder, digits, scale_factor)")
    return bounds.view(2, 1, c, 1, 1).to(dev)


@torch.no_grad()
def caption_sample(model, schedule: NoiseSchedule, tokens: torch.Tensor, *, steps: int = 50,
                   guidance_scale: float = 3.0, generator=None, eta: float = 0.0,
                   spacing: str = "trailing", return_trajectory: bool = False,
                   keep_attention: bool = False, latent_shape=(4, 8, 8),
                   clip_z0=None) -> TextSamples:
    """DDIM in latent space with classifier-free guidance on the caption.

    ``tokens`` ``(B, L)`` are the captions' ids.  The captions and the null caption are
    encoded once; at every step one batched call predicts the noise for both, and the
    guided noise ``eps_null + s (eps_caption - eps_null)`` drives :func:`ddim_step`.
    ``guidance_scale`` 1 is the plain conditional model, 0 ignores the caption.  The
    starting noise comes from ``generator`` on the CPU, so a seed gives the same samples on
    every device and for every caption.

    ``clip_z0`` is the latent counterpart of a pixel sampler's clipping to [-1, 1]: a
    ``(2, C)`` tensor ``[low, high]`` per latent channel
    (:func:`unet_edu.latent.latent_range` of the training digits).  At every step the
    predicted clean latent is clipped to it and the noise made consistent with the clipped
    latent.  Without it (``None``), the first step of the cosine schedule, from
    ``alpha_bar`` = 2.4e-9 at t = 999, multiplies the network's error in ``eps`` by
    ``sqrt(alpha_bar_prev / alpha_bar)``, over a thousand at 20 steps.
    """
    guidance_scale = _check_guidance(guidance_scale, "caption_sample")
    _check_schedule(model, schedule, "caption_sample")
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or len(tokens) == 0:
        got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"caption_sample: tokens must be a non-empty (B, L) tensor of ids, got "
                         f"{got}; use captions.tokenizer().encode(captions)")
    b = len(tokens)
    tokens = _check_tokens(model, tokens, b, "caption_sample")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
        raise ValueError(f"caption_sample: eta must lie in [0, 1] (0 deterministic), got {eta!r}")
    dev = next(model.parameters()).device
    bounds = _check_clip(clip_z0, latent_shape, dev)
    ts = ddim_timesteps(schedule.num_steps, steps, spacing)
    a_bars = schedule.alphas_cumprod
    x = torch.randn((b, *latent_shape), generator=generator).to(dev)
    out = TextSamples(latents=x)
    sites = _cross_attention_sites(model.unet) if keep_attention else []
    if keep_attention and not sites:
        raise ValueError("caption_sample: keep_attention=True needs a U-Net with transformer "
                         "blocks (built with transformer_depth=...), whose cross-attention "
                         "layers can keep their weights; this one has none")
    kept: list[list[torch.Tensor]] = [[] for _ in sites]
    with eval_mode(model):
        both = torch.cat([tokens, null_tokens(b, tokens.shape[1])]).to(dev)
        context = model.encode_text(both)
        for _, _, _, module in sites:
            module.keep_weights = True
        try:
            for i, step in enumerate(ts):
                t = torch.full((2 * b,), step, device=dev, dtype=torch.long)
                eps_c, eps_u = model.unet(torch.cat([x, x]), t, context=context).chunk(2)
                eps = eps_u + guidance_scale * (eps_c - eps_u)
                if bounds is not None:
                    # the clean latent this eps implies, clipped to the training
                    # latents' range, and the noise consistent with it
                    a = a_bars[step].item()
                    z0_clipped = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
                    z0_clipped = torch.maximum(torch.minimum(z0_clipped, bounds[1]),
                                               bounds[0])
                    eps = (x - math.sqrt(a) * z0_clipped) / math.sqrt(1 - a)
                for k, (_, _, _, module) in enumerate(sites):
                    kept[k].append(module.last_weights[:b].mean(1).cpu())  # (B, HW, L)
                a_prev = a_bars[ts[i + 1]].item() if i + 1 < len(ts) else 1.0
                noise = None
                if eta > 0 and i + 1 < len(ts):
                    noise = torch.randn(x.shape, generator=generator).to(dev)
                x_next, z0 = ddim_step(x, eps, a_bars[step].item(), a_prev, eta, noise,
                                       clip_x0=False)
                if bounds is not None:
                    # ddim_step recomputes z0 from eps, which loses digits where
                    # alpha_bar is tiny; keep the clipped prediction itself
                    z0 = z0_clipped
                if return_trajectory:
                    out.zt.append(x.cpu())
                    out.z0_pred.append(z0.cpu())
                x = x_next
                out.timesteps.append(step)
        finally:
            for _, _, _, module in sites:
                module.keep_weights, module.last_weights = False, None
    out.latents = x
    if keep_attention:
        maps, info = [], []
        for (path, level, name, _), weights in zip(sites, kept):
            w = torch.stack(weights)  # (steps, B, HW, L)
            side = math.isqrt(w.shape[2])
            maps.append(w.permute(0, 1, 3, 2).reshape(len(ts), b, -1, side, side))
            info.append(AttentionSite(name, path, level, side))
        out.attention = AttentionMaps(info, maps, tokens.cpu(), list(ts))
    return out


@dataclass
class LatentDiffusion:
    """The parts of a latent text-to-image model, and sampling from captions.

    ``autoencoder`` (:class:`~unet_edu.latent.DigitAutoencoder`), ``model``
    (:class:`~unet_edu.models.TextConditionedUNet`), ``schedule``, ``scale_factor`` (the
    latents the model sees are ``scale_factor * z``), ``thresholds`` (the caption thresholds
    the model was trained with, :class:`~unet_edu.captions.CaptionThresholds`), the
    caption tokenizer, and ``latent_range``, the range the sampler clips its predicted clean
    latent to (:func:`~unet_edu.latent.latent_range`; ``None`` does not clip).
    :meth:`from_pretrained` loads the shipped pair and measures the range on the bundled
    training digits.
    """

    autoencoder: object
    model: object
    schedule: NoiseSchedule
    scale_factor: float
    thresholds: cap.CaptionThresholds | None = None
    tokenizer: object = field(default_factory=cap.tokenizer)
    latent_range: torch.Tensor | None = None

    @classmethod
    def from_pretrained(cls, device=None) -> "LatentDiffusion":
        """``pretrained.load("digits-vae")`` and ``pretrained.load("digits-ldm")`` as one."""
        from .pretrained import load

        vae = load("digits-vae", device=device)
        ldm = load("digits-ldm", device=device)
        return cls.from_trained(vae.model, ldm.model, ldm.schedule, ldm.info.extra["training"])

    @classmethod
    def from_trained(cls, autoencoder, model, schedule, training: dict) -> "LatentDiffusion":
        """The pipeline of a trained autoencoder and latent U-Net, set up as the U-Net was
        trained: ``training`` is the U-Net's training record (its checkpoint's
        ``extra["training"]``), which holds the scale factor and the caption thresholds; the
        sampler's clipping range is measured on the bundled training digits, as in training
        (:func:`~unet_edu.latent.latent_range`)."""
        from .data import mnist
        from .latent import latent_range

        missing = [k for k in ("scale_factor", "caption_thresholds") if k not in training]
        if missing:
            raise ValueError(f"LatentDiffusion.from_trained: the training record lacks "
                             f"{missing}; pass the latent U-Net checkpoint's "
                             f"info.extra['training'] (written by tools.train_latent)")
        thresholds = cap.CaptionThresholds.from_dict(training["caption_thresholds"])
        scale = float(training["scale_factor"])
        digits = mnist("train", source="bundled").images * 2 - 1
        return cls(autoencoder, model, schedule, scale, thresholds,
                   latent_range=latent_range(autoencoder, digits, scale))

    def encode(self, captions) -> torch.Tensor:
        """Token ids of ``captions`` (a string, ``None`` for the null caption, or a list)."""
        return self.tokenizer.encode(captions)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, crop: bool = True) -> torch.Tensor:
        """Scaled latents -> digits in [-1, 1] (``crop=False``: the 32 x 32 canvas)."""
        with eval_mode(self.autoencoder):
            dev = next(self.autoencoder.parameters()).device
            return self.autoencoder.decode(latents.to(dev) / self.scale_factor, crop).clamp(-1, 1)

    def sample(self, captions, *, steps: int = 50, guidance_scale: float = 3.0, seed: int = 0,
               generator=None, **kwargs) -> TextSamples:
        """One sample per caption: :func:`caption_sample`, then decode.  ``images`` are in
        [-1, 1]; ``seed`` is used when no ``generator`` is given."""
        tokens = self.encode(captions)
        gen = generator if generator is not None else torch.Generator().manual_seed(int(seed))
        kwargs.setdefault("clip_z0", self.latent_range)
        out = caption_sample(self.model, self.schedule, tokens, steps=steps,
                             guidance_scale=guidance_scale, generator=gen,
                             latent_shape=self.autoencoder.latent_shape, **kwargs)
        out.images = self.decode(out.latents).cpu()
        if out.attention is not None:
            out.attention.tokens = self.tokenizer.decode(out.attention.token_ids)
        return out


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------
def prompt_study(pipe: LatentDiffusion, prompts, *, n: int = 100, guidance_scales=(1.0, 3.0),
                 steps: int = 20, seed: int = 0, classifier=None, batch_size: int = 250) -> list:
    """Sample ``n`` digits per prompt and guidance scale, and measure what was drawn.

    ``prompts`` are strings or :class:`~unet_edu.captions.Prompt` s.  Every (prompt, scale)
    starts from the same ``n`` noises (seeded by ``seed``), so prompts are compared on the
    same starting points.  Returns one dict per (prompt, scale): ``prompt``, ``guidance``,
    ``asked`` (:func:`~unet_edu.captions.parse_caption` of the prompt), the measured
    ``thickness``, ``width`` and ``slant`` (tensors of ``n``, NaN for blank samples) and,
    with a :class:`~unet_edu.metrics.DigitClassifier`, ``predicted`` classes.
    """
    from .metrics import classifier_features

    texts = [p.text if isinstance(p, cap.Prompt) else p for p in prompts]
    if not texts:
        raise ValueError("prompt_study needs at least one prompt, e.g. "
                         "captions.prompts_varying('thickness', 7)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a whole number of samples >= 1, got {n!r}")
    scales = [_check_guidance(s, "prompt_study") for s in guidance_scales]
    asked = [cap.parse_caption(t) for t in texts]
    pipe.encode(texts)  # unknown words fail here, before any sampling
    rows = []
    for text, ask in zip(texts, asked):
        for scale in scales:
            gen = torch.Generator().manual_seed(int(seed))
            images = []
            for start in range(0, n, batch_size):
                k = min(batch_size, n - start)
                images.append(pipe.sample([text] * k, steps=steps, guidance_scale=scale,
                                          generator=gen).images)
            x = (torch.cat(images) + 1) / 2
            row = {"prompt": text, "guidance": scale, "asked": ask, **cap.measure(x)}
            if classifier is not None:
                row["predicted"] = classifier_features(classifier, x)[1]
            rows.append(row)
    return rows


UNITS = {"thickness": "px", "width": "px", "slant": "°"}


@dataclass(frozen=True)
class PromptEffect:
    """How far changing the prompt from ``base`` to ``prompt`` moved one measured attribute.

    ``effect`` is the mean over samples of ``attribute(sample of prompt) - attribute(sample
    of base)``, the two samples of each pair drawn from the same starting noise (so the
    difference is the caption's doing, not the noise's); ``low``/``high`` its confidence
    interval (``level``, Student's t over the ``n`` pairs).  ``verdict`` is one of the book's
    three (:data:`unet_edu.claims.VERDICTS`): ``"apart"`` (the interval excludes 0),
    ``"equivalent"`` (it lies inside ``±margin``, a margin fixed before looking) or ``"not
    resolved"``.  The interval covers the sampling noise of *this* trained model, not the
    spread between training seeds.
    """

    attribute: str
    base: str
    prompt: str
    guidance: float
    effect: float
    low: float
    high: float
    verdict: str
    margin: float | None
    n: int
    level: float = 0.95

    @property
    def equivalent(self) -> bool:
        """The whole interval lies within ``±margin`` (also for a resolved, small effect)."""
        return self.margin is not None and -self.margin < self.low and self.high < self.margin

    def describe(self, digits: int = 2) -> str:
        """E.g. ``thickness: "thick seven" - "seven" = +0.41 px [0.36, 0.46] (95%, 200 pairs,
        guidance 3): apart``."""
        unit = UNITS.get(self.attribute, "")
        verdict = self.verdict
        if self.equivalent:
            verdict = ("equivalent" if verdict == "equivalent" else "apart, and") + \
                f" within ±{self.margin:g} {unit}"
        return (f"{self.attribute}: \u201c{self.prompt}\u201d - \u201c{self.base}\u201d = "
                f"{self.effect:+.{digits}f} {unit} [{self.low:.{digits}f}, "
                f"{self.high:.{digits}f}] ({self.level:.0%}, {self.n} pairs, guidance "
                f"{self.guidance:g}): {verdict}")

    __str__ = describe


def _study_row(rows, prompt: str, guidance) -> dict:
    found = [r for r in rows if r["prompt"] == prompt]
    if not found:
        raise ValueError(f"no row of the prompt study has the prompt {prompt!r}; its prompts "
                         f"are {sorted({r['prompt'] for r in rows})}")
    scales = sorted({r["guidance"] for r in found})
    if guidance is None:
        if len(scales) > 1:
            raise ValueError(f"the prompt {prompt!r} was sampled at the guidance scales "
                             f"{scales}; pick one with guidance=")
        guidance = scales[0]
    picked = [r for r in found if r["guidance"] == guidance]
    if not picked:
        raise ValueError(f"the prompt {prompt!r} was not sampled at guidance {guidance!r}; "
                         f"its scales are {scales}")
    return picked[0]


def prompt_effect(rows, base: str, prompt: str, attribute: str, *, guidance=None,
                  margin: float | None = None, level: float = 0.95) -> PromptEffect:
    """The effect on ``attribute`` of going from ``base`` to ``prompt``, with its interval.

    ``rows`` come from :func:`prompt_study`, which draws every (prompt, guidance scale) from
    the same starting noises: sample ``i`` of one prompt and sample ``i`` of the other form a
    pair, and the effect is the mean of the paired differences.  Pairs with a blank sample
    (a NaN measurement) are left out.  ``margin`` (in the attribute's unit: pixels or
    degrees) makes the "equivalent" verdict possible, e.g. for a word that should *not* move
    another attribute.  ``guidance`` picks the scale when the study swept several.
    """
    from scipy import stats

    if attribute not in UNITS:
        raise ValueError(f"attribute must be one of {', '.join(UNITS)}, got {attribute!r}")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))
                               or not math.isfinite(margin) or margin <= 0):
        raise ValueError(f"margin must be a positive number in {UNITS[attribute]} (or None), "
                         f"got {margin!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie between 0 and 1, e.g. 0.95, got {level!r}")
    a = _study_row(rows, base, guidance)
    b = _study_row(rows, prompt, a["guidance"] if guidance is None else guidance)
    if a["guidance"] != b["guidance"]:
        raise ValueError(f"{base!r} and {prompt!r} were sampled at different guidance scales "
                         f"({a['guidance']} and {b['guidance']}); pass guidance=")
    va, vb = a[attribute].double(), b[attribute].double()
    if va.shape != vb.shape:
        raise ValueError(f"{base!r} has {len(va)} samples and {prompt!r} {len(vb)}: pairs need "
                         f"the same n from one prompt_study call")
    d = (vb - va)[torch.isfinite(vb - va)]
    if len(d) < 2:
        raise ValueError(f"only {len(d)} pair(s) of {base!r} and {prompt!r} have both samples "
                         f"inked; an interval needs at least 2, so sample more (n=)")
    effect = float(d.mean())
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1)) * float(d.std()) / math.sqrt(len(d))
    low, high = effect - half, effect + half
    if low > 0 or high < 0:
        verdict = "apart"
    elif margin is not None and -margin < low and high < margin:
        verdict = "equivalent"
    else:
        verdict = "not resolved"
    return PromptEffect(attribute, base, prompt, float(a["guidance"]), effect, low, high,
                        verdict, None if margin is None else float(margin), len(d), level)


def prompt_effects(rows, prompts, *, margins: dict | None = None,
                   level: float = 0.95) -> list[PromptEffect]:
    """Every effect of a one-attribute study: each word against the prompt without it.

    ``prompts`` are :func:`~unet_edu.captions.prompts_varying` 's (the first has no word for
    the varied attribute: the base).  For each worded prompt, each guidance scale in ``rows``
    and each of the three attributes, one :class:`PromptEffect`: the varied attribute should
    come out "apart" in the word's direction, the two others "equivalent" within their
    ``margins`` (``{"thickness": 0.1, "width": 0.5, "slant": 2.0}``, say) if each word acts on
    its own attribute only.
    """
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, cap.Prompt) for p in prompts):
        raise ValueError("prompt_effects needs the Prompt list of captions.prompts_varying(...), "
                         "the prompts given to prompt_study")
    bases = [p for p in prompts if p.word is None]
    if len(bases) != 1 or len({p.attribute for p in prompts}) != 1:
        raise ValueError("prompt_effects needs prompts that vary one attribute, exactly one of "
                         "them without its word; use captions.prompts_varying(attribute, digit)")
    margins = dict(margins or {})
    unknown = set(margins) - set(UNITS)
    if unknown:
        raise ValueError(f"margins has unknown attributes {sorted(unknown)}; use "
                         f"{', '.join(UNITS)}")
    base = bases[0].text
    scales = sorted({r["guidance"] for r in rows if r["prompt"] == base})
    return [prompt_effect(rows, base, p.text, attribute, guidance=g,
                          margin=margins.get(attribute), level=level)
            for p in prompts if p.word is not None for g in scales for attribute in UNITS]


def class_agreement(rows, level: float = 0.95) -> list[dict]:
    """How often the digit classifier reads the class the prompt asked for, with an interval.

    For each row of :func:`prompt_study` run with a classifier: ``prompt``, ``guidance``,
    ``rate`` (the fraction of samples classified as the prompt's digit), ``low``/``high`` (the
    Wilson score interval, which stays inside [0, 1] for rates near 1) and ``n``.
    """
    from scipy import stats

    z = float(stats.norm.ppf(0.5 + level / 2))
    out = []
    for r in rows:
        if "predicted" not in r:
            raise ValueError("class_agreement needs a prompt_study run with classifier=, "
                             "e.g. pretrained.load('digit-classifier').model")
        digit = r["asked"]["digit"]
        if digit is None:
            raise ValueError(f"the prompt {r['prompt']!r} names no digit; class agreement needs "
                             f"one")
        n = len(r["predicted"])
        p = float((r["predicted"] == digit).float().mean())
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        out.append({"prompt": r["prompt"], "guidance": r["guidance"], "rate": p,
                    "low": max(0.0, centre - half), "high": min(1.0, centre + half), "n": n})
    return out


def step_cost(fn, *, repeats: int = 10, warmup: int = 2) -> dict:
    """What one call of ``fn()`` (e.g. one sampling step) costs.

    ``flops``: floating-point operations counted by
    :class:`torch.utils.flop_counter.FlopCounterMode` (matrix products and convolutions; the
    same on every machine); ``seconds``: the median
    wall time over ``repeats`` calls after ``warmup`` calls (this machine, now), and
    ``seconds_min``.  ``fn`` runs under ``torch.no_grad``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            fn()
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    times.sort()
    return {"flops": int(counter.get_total_flops()), "seconds": times[len(times) // 2],
            "seconds_min": times[0], "repeats": repeats}


def compare_step_costs(pixel_model, pipe: LatentDiffusion, *, batch: int = 100,
                       repeats: int = 10) -> dict:
    """The cost of sampling ``batch`` digits, pixel model against latent model, part by part.

    Each sampling step of either model is one network call on twice the batch (classifier-free
    guidance: conditional and unconditional together).  The latent model also encodes the
    captions once and decodes the latents once per sample.  Returns ``{part: step_cost(...)}``
    for ``"pixel U-Net step"``, ``"latent U-Net step"``, ``"text encoder (once)"`` and
    ``"decoder (once)"``; the cost of ``n`` steps is ``n`` times the step plus the once-only
    parts.  ``pixel_model`` is chapter 5's class-conditional
    :class:`~unet_edu.models.DiffusionUNet` (``pretrained.load("digits-ddpm").model``).
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a whole number of digits >= 1, got {batch!r}")
    cfg = pixel_model.config
    dev_p = next(pixel_model.parameters()).device
    dev_l = next(pipe.model.parameters()).device
    x = torch.zeros(2 * batch, cfg["in_channels"], 28, 28, device=dev_p)
    t_p = torch.full((2 * batch,), 500, device=dev_p)
    y = (torch.arange(2 * batch, device=dev_p) % 10) if cfg.get("num_classes") else None
    z = torch.zeros(2 * batch, *pipe.autoencoder.latent_shape, device=dev_l)
    t_l = torch.full((2 * batch,), 500, device=dev_l)
    tokens = pipe.encode([cap.CLASS_WORDS[i % 10] for i in range(batch)] + [None] * batch)
    tokens = tokens.to(dev_l)
    with eval_mode(pixel_model), eval_mode(pipe.model), eval_mode(pipe.autoencoder):
        context = pipe.model.encode_text(tokens)
        costs = {
            "pixel U-Net step": step_cost(lambda: pixel_model(x, t_p, y), repeats=repeats),
            "latent U-Net step": step_cost(lambda: pipe.model.unet(z, t_l, context=context),
                                           repeats=repeats),
            "text encoder (once)": step_cost(lambda: pipe.model.encode_text(tokens),
                                             repeats=repeats),
            "decoder (once)": step_cost(lambda: pipe.autoencoder.decode(z[:batch]),
                                        repeats=repeats),
        }
    for part in costs.values():
        part["digits"] = batch  # each part's cost serves this many digits
    return costs


_COST_PARTS = {"pixel": ("pixel U-Net step", ()),
               "latent": ("latent U-Net step", ("text encoder (once)", "decoder (once)"))}


def sampling_cost(costs: dict, model: str, steps: int) -> dict:
    """What drawing one digit with ``steps`` guided sampling steps costs, from measured parts.

    ``costs`` is :func:`compare_step_costs` 's result; ``model`` is ``"pixel"`` (``steps``
    U-Net calls) or ``"latent"`` (``steps`` U-Net calls, plus encoding the caption and
    decoding the latent once).  Returns ``flops`` and ``seconds`` per digit (the seconds of
    this machine when the costs were measured).
    """
    if model not in _COST_PARTS:
        raise ValueError(f"model must be 'pixel' or 'latent', got {model!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a whole number of sampling steps >= 1, got {steps!r}")
    step, once = _COST_PARTS[model]
    missing = [p for p in (step, *once) if p not in costs]
    if missing:
        raise ValueError(f"costs has no {missing}; pass the result of compare_step_costs")
    parts = [(costs[step], steps)] + [(costs[p], 1) for p in once]
    return {"flops": sum(c["flops"] * k / c["digits"] for c, k in parts),
            "seconds": sum(c["seconds"] * k / c["digits"] for c, k in parts)}


def _score_dict(score) -> dict:
    d = score.as_dict() if hasattr(score, "as_dict") else dict(score)
    missing = {"steps", "fd"} - set(d)
    if missing:
        raise ValueError(f"a score needs 'steps' and 'fd' (a SamplerScore or a row of the "
                         f"stored sweep), this one lacks {sorted(missing)}")
    return d


def pixel_vs_latent(costs: dict, pixel_scores, latent_scores) -> list[dict]:
    """Quality and cost side by side: one row per model and number of sampling steps.

    ``pixel_scores`` are scores of chapter 5's model (rows of its stored sampler sweep,
    ``pretrained.sweep.shipped_results()["rows"]`` with ``sampler == "ddim"`` and
    ``sweep.eta_of(row) == 0``, or
    :func:`~unet_edu.metrics.evaluate_sampler` results); ``latent_scores`` are
    :func:`latent_sampler_score` results.  Each row: ``model``, ``steps``, ``fd``, ``fd_sd``,
    ``label_accuracy``, and ``flops``/``seconds`` per digit from :func:`sampling_cost`.  Rows
    with the same ``steps`` compare the two at matched sampling steps (not matched compute:
    a latent step is cheaper); :func:`matched_quality` compares them at matched quality.
    """
    rows = []
    for model, scores in (("pixel", pixel_scores), ("latent", latent_scores)):
        for score in scores:
            d = _score_dict(score)
            cost = sampling_cost(costs, model, int(d["steps"]))
            rows.append({"model": model, "steps": int(d["steps"]), "fd": float(d["fd"]),
                         "fd_sd": d.get("fd_sd"), "label_accuracy": d.get("label_accuracy"),
                         **cost})
    return sorted(rows, key=lambda r: (r["model"] != "pixel", r["steps"]))


def matched_quality(rows, fd_target: float) -> dict:
    """The cheapest setting of each model whose samples reach ``fd_target``, and the saving.

    ``rows`` come from :func:`pixel_vs_latent`.  Returns ``{"pixel": row or None, "latent":
    row or None, "flops_ratio": pixel FLOPs / latent FLOPs, "seconds_ratio": ...}``
    (ratios ``None`` when a model never reaches the target): how many times fewer operations
    the latent model needs for the same Fréchet distance.
    """
    if isinstance(fd_target, bool) or not isinstance(fd_target, (int, float)) \
            or not math.isfinite(fd_target) or fd_target <= 0:
        raise ValueError(f"fd_target must be a positive Fréchet distance, got {fd_target!r}")
    best = {}
    for model in ("pixel", "latent"):
        good = [r for r in rows if r["model"] == model and r["fd"] <= fd_target]
        best[model] = min(good, key=lambda r: r["flops"]) if good else None
    both = best["pixel"] is not None and best["latent"] is not None
    return {**best,
            "flops_ratio": best["pixel"]["flops"] / best["latent"]["flops"] if both else None,
            "seconds_ratio": (best["pixel"]["seconds"] / best["latent"]["seconds"]
                              if both else None)}


def latent_sampler_score(pipe: LatentDiffusion, classifier, real_features, *, n: int = 500,
                         steps: int = 50, guidance_scale: float = 3.0, seed: int = 2,
                         batch_size: int = 250):
    """Score the latent model like :func:`unet_edu.metrics.evaluate_sampler` scores a pixel one.

    Prompts are the bare class words ``"zero", "one", ..., "nine", "zero", ...`` (``n`` of
    them), so the task is the class-conditional one of chapter 5.  Returns a
    :class:`~unet_edu.metrics.SamplerScore`: Fréchet distance to ``real_features`` with its
    bootstrap spread, the fraction the classifier labels as asked, within-class variety, and
    the wall time of sampling and decoding.
    """
    from .metrics import (SamplerScore, classifier_features, frechet_distance,
                          frechet_distance_spread, within_class_variety)

    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be a whole number of at least 2 to estimate a covariance, "
                         f"got {n!r}")
    labels = torch.arange(n) % 10
    gen = torch.Generator().manual_seed(int(seed))
    samples, seconds = [], 0.0
    for y in labels.split(batch_size):
        start = time.perf_counter()
        out = pipe.sample([cap.CLASS_WORDS[int(c)] for c in y], steps=steps,
                          guidance_scale=guidance_scale, generator=gen)
        seconds += time.perf_counter() - start
        samples.append(out.images)
    feats, preds = classifier_features(classifier, torch.cat(samples), value_range=(-1, 1))
    return SamplerScore(sampler="ddim-latent", steps=steps, n=n, guidance_scale=guidance_scale,
                        fd=frechet_distance(feats, real_features),
                        label_accuracy=float((preds == labels).float().mean()), seconds=seconds,
                        fd_sd=frechet_distance_spread(feats, real_features),
                        variety=within_class_variety(feats, labels) if n >= 20 else None,
                        spacing="trailing")


# --------------------------------------------------------------------------------------------
# Stored measurements of the shipped model
# --------------------------------------------------------------------------------------------
# The digit each attribute study varies its words on: a seven's stroke, a zero's width, a
# two's slant, attributes a reader sees at a glance on those digits.
STUDY_DIGITS = {"thickness": 7, "width": 0, "slant": 2}
STUDIES_FILE = "digits-ldm-studies.json"


def _plain(values: torch.Tensor, digits: int = 4) -> list:
    """A tensor as a JSON list: rounded floats, ``None`` for NaN (a blank sample)."""
    return [None if math.isnan(v) else round(v, digits) for v in values.double().tolist()]


def measure_studies(pipe: LatentDiffusion, classifier, real_features, *, n: int = 200,
                    guidance_scales=(1.0, 3.0, 5.0), steps: int = 20, seed: int = 0,
                    fd_steps=(10, 20, 50), fd_n: int = 500, fd_guidance: float = 3.0) -> dict:
    """Every measurement chapter 7 reports about the trained model, as plain JSON data.

    * ``"prompt_studies"``: for each attribute of :data:`STUDY_DIGITS`, the rows of
      :func:`prompt_study` for :func:`~unet_edu.captions.prompts_varying` (attribute, digit)
      at each of ``guidance_scales``, ``n`` digits each (the same ``n`` starting noises for
      every prompt and scale), with the measured thickness, width and slant of every sample
      and the class the digit classifier reads;
    * ``"latent_scores"``: :func:`latent_sampler_score` at each of ``fd_steps`` DDIM steps
      (Fréchet distance to ``real_features`` with its spread, label accuracy, seconds), the
      latent half of :func:`pixel_vs_latent` (the pixel half is chapter 5's stored sweep).

    Sampling all of it takes minutes, far more than a chapter may spend, so
    ``python -m tools.train_latent studies`` runs it once and stores the result next to the
    model; :func:`shipped_studies` reads it back.
    """
    studies = {}
    for attribute, digit in STUDY_DIGITS.items():
        prompts = cap.prompts_varying(attribute, digit)
        rows = prompt_study(pipe, prompts, n=n, guidance_scales=guidance_scales, steps=steps,
                            seed=seed, classifier=classifier)
        studies[attribute] = [
            {"prompt": r["prompt"], "guidance": r["guidance"],
             **{a: _plain(r[a]) for a in UNITS}, "predicted": r["predicted"].tolist()}
            for r in rows]
    scores = []
    for s in fd_steps:
        score = latent_sampler_score(pipe, classifier, real_features, n=fd_n, steps=int(s),
                                     guidance_scale=fd_guidance)
        scores.append({k: (round(v, 5) if isinstance(v, float) else v)
                       for k, v in score.as_dict().items()})
    return {"settings": {"n": n, "guidance_scales": [float(g) for g in guidance_scales],
                         "steps": steps, "seed": seed, "study_digits": STUDY_DIGITS,
                         "fd_steps": [int(s) for s in fd_steps], "fd_n": fd_n,
                         "fd_guidance": fd_guidance},
            "prompt_studies": studies, "latent_scores": scores}


def studies_from_dict(data: dict) -> dict:
    """:func:`measure_studies` 's data with every row as :func:`prompt_study` returns it
    (tensors, NaN for blank samples, the parsed prompt under ``"asked"``), so that
    :func:`prompt_effects` and :func:`class_agreement` take it directly."""
    try:
        studies = {}
        for attribute, rows in data["prompt_studies"].items():
            studies[attribute] = [
                {"prompt": r["prompt"], "guidance": float(r["guidance"]),
                 "asked": cap.parse_caption(r["prompt"]),
                 **{a: torch.tensor([math.nan if v is None else v for v in r[a]],
                                    dtype=torch.float32) for a in UNITS},
                 "predicted": torch.tensor(r["predicted"], dtype=torch.long)}
                for r in rows]
        return {"settings": dict(data["settings"]), "prompt_studies": studies,
                "latent_scores": list(data["latent_scores"])}
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"the stored studies are not what measure_studies writes ({err!r}); "
                         f"write them again with python -m tools.train_latent studies") from err


def shipped_studies(path=None) -> dict:
    """The stored measurements of the shipped ``digits-ldm`` (:func:`measure_studies`).

    Read from ``digits-ldm-studies.json`` in :mod:`unet_edu.pretrained` (checked against its
    checksum) or from ``path``; see :func:`studies_from_dict` for the form.
    """
    import json
    from pathlib import Path

    from . import pretrained

    path = Path(pretrained.HERE) / STUDIES_FILE if path is None else Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path.name} is missing; write it with python -m "
                                f"tools.train_latent studies (after vae and ldm)")
    pretrained.verify(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"cannot read the stored studies {path} ({err}); write them again "
                         f"with python -m tools.train_latent studies") from err
    return studies_from_dict(data)
