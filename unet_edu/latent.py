"""Latents: a small KL-regularised autoencoder for digits, and the latent scale factor.

Latent diffusion (Rombach et al., 2022) splits image generation in two.  An autoencoder,
trained once, compresses an image into a smaller *latent* and decodes it back; the diffusion
model then learns to generate latents, which is far cheaper than generating pixels, and the
decoder turns its latents into images.  Stable Diffusion's autoencoder maps a ``3 x 512 x
512`` image to a ``4 x 64 x 64`` latent (downsampling factor ``f = 8``).

:class:`DigitAutoencoder` does the same for ``1 x 28 x 28`` digits in [-1, 1]: the digit is
padded to ``32 x 32`` (two pixels of background on each side, so that the latent grid halves
cleanly twice more inside the U-Net) and mapped to a ``4 x 8 x 8`` latent (``f = 4``, as the
LDM-4 models), 3.1 times fewer numbers than pixels.  The encoder does not output one latent
but a Gaussian, :class:`DiagonalGaussian` (a mean and a log-variance per latent number), as
in a variational autoencoder (Kingma & Welling, 2014); training pays a KL penalty that pulls
that Gaussian towards ``N(0, I)`` (:func:`vae_loss`).

Latent diffusion makes that penalty tiny (weight ``1e-6``): it only keeps the latent space
from drifting to huge values; the latents are not standard normal.  Diffusion, however,
assumes data of about unit variance (the noise it adds has variance 1), so LDM divides the
latents by their standard deviation: the *scale factor* ``1 / std(z)``, estimated once from
a batch of training latents.  Stable Diffusion's ``0.18215`` is exactly that number for its
autoencoder; :func:`latent_scale_factor` computes it the same way for this one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Downsample, ResBlock, Upsample, group_norm
from .models.checks import check_batch
from .models.config import RecordsConfig
from .runtime import eval_mode

__all__ = ["DiagonalGaussian", "DigitAutoencoder", "vae_loss", "latent_scale_factor",
           "encode_dataset", "latent_statistics", "reconstruction_error"]

PAD = 2  # background pixels added on each side: 28 -> 32


class DiagonalGaussian:
    """The encoder's output: a Gaussian with independent coordinates, ``N(mean, diag(var))``.

    The log-variance is clamped to [-30, 20] as in the latent diffusion code, so ``exp`` can
    neither vanish nor overflow.  :meth:`sample` draws ``mean + std * eps`` (the
    reparameterisation trick: gradients flow to mean and std); :meth:`kl` is the closed-form
    ``KL(N(mean, var) || N(0, 1))`` summed over the latent, one value per image.
    """

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype)
        return self.mean + self.std * noise.to(self.mean.device)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        # KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1 - log s^2) / 2 per coordinate.
        return 0.5 * (self.mean.square() + self.var - 1.0 - self.logvar).flatten(1).sum(1)


class DigitAutoencoder(RecordsConfig, nn.Module):
    """KL-regularised autoencoder: ``1 x 28 x 28`` digits in [-1, 1] <-> ``4
    x 8 x 8`` latents.

    Encoder: pad to 32 x 32, ``conv_in``, then per level one ResBlock (no
    time embedding) and, except at the last level, a stride-2
    :class:`~unet_edu.blocks.Downsample`; one more ResBlock, GroupNorm, SiLU
    and ``conv_out`` to ``2 * latent_channels`` maps (mean and
    log-variance).  The decoder mirrors it with
    :class:`~unet_edu.blocks.Upsample` and crops back to 28 x 28.  This is
    the layout of LDM's autoencoder without its attention block and its 1x1
    "quant" convolutions, which a digit does not need.  ``channels`` are the
    widths of the levels, top first; ``len(channels) - 1`` downsamplings
    give the latent side ``32 / 2 ** (len(channels) - 1)``.
    """

    def __init__(self, latent_channels: int = 4, channels=(16, 32, 32),
                 norm_groups: int = 8):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) < 1 or min(channels) < 1 or latent_channels < 1:
            raise ValueError(
                f"DigitAutoencoder needs latent_channels >= 1 and one "
                f"positive width per level, got "
                f"latent_channels={latent_channels}, channels={channels}; "
                f"e.g. channels=(16, 32, 32)")
        self.downsamplings = len(channels) - 1

        def res(cin, cout):
            return ResBlock(cin, cout, None, 0.0, norm_groups)

        enc: list[nn.Module] = [nn.Conv2d(1, channels[0], 3, padding=1)]
        ch = channels[0]
        for level, width in enumerate(channels):
            enc.append(res(ch, width))
            ch = width
            if level < len(channels) - 1:
                enc.append(Downsample(ch))
        enc += [res(ch, ch),
                group_norm(ch, norm_groups, "DigitAutoencoder encoder"),
                nn.SiLU(), nn.Conv2d(ch, 2 * latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [
            nn.Conv2d(latent_channels, ch, 3, padding=1), res(ch, ch)]
        for level in reversed(range(len(channels))):
            dec.append(res(ch, channels[level]))
            ch = channels[level]
            if level > 0:
                dec.append(Upsample(ch))
        dec += [group_norm(ch, norm_groups, "DigitAutoencoder decoder"),
                nn.SiLU(), nn.Conv2d(ch, 1, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = (28 + 2 * PAD) // 2**self.downsamplings
        return (self.config["latent_channels"], side, side)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """The posterior ``q(z | x)`` of digits ``x`` ``(B, 1, 28, 28)`` in
        [-1, 1]."""
        check_batch(x, 1, "DigitAutoencoder.encode", 2,
                    self.encoder[0].weight.dtype)
        if tuple(x.shape[-2:]) != (28, 28):
            raise ValueError(
                f"DigitAutoencoder encodes 28 x 28 digits, got "
                f"{tuple(x.shape[-2:])}; resize or crop them to 28 x 28")
        # the background is -1 in [-1, 1]
        x = F.pad(x, (PAD, PAD, PAD, PAD), value=-1.0)
        return DiagonalGaussian(self.encoder(x))

    def decode(self, z: torch.Tensor, crop: bool = True) -> torch.Tensor:
        """Digits in (about) [-1, 1] from latents ``(B, 4, 8, 8)``
        (unscaled: multiply a diffusion model's latents by ``1 /
        scale_factor`` first).  ``crop=False`` returns the 32 x 32 canvas on
        which latent cell ``(i, j)`` covers pixels ``4i..4i+3``."""
        shape = self.latent_shape
        if (not isinstance(z, torch.Tensor) or z.dim() != 4
                or tuple(z.shape[1:]) != shape):
            got = (tuple(z.shape) if isinstance(z, torch.Tensor)
                   else type(z).__name__)
            raise ValueError(
                f"DigitAutoencoder.decode expects latents of shape (B, "
                f"{', '.join(map(str, shape))}), got {got}; decode what "
                f"this autoencoder's encode(x) gives, or samples drawn "
                f"with latent_shape={shape} (LatentDiffusion.sample does "
                f"so)")
        check_batch(z, shape[0], "DigitAutoencoder.decode", 2,
                    self.encoder[0].weight.dtype)
        out = self.decoder(z)
        return out[..., PAD:-PAD, PAD:-PAD] if crop else out

    def forward(self, x: torch.Tensor,
                generator: torch.Generator | None = None):
        """``(reconstruction, posterior)``: decode a sample of the posterior
        of ``x``."""
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator)), posterior


def vae_loss(model: DigitAutoencoder, x: torch.Tensor, generator=None,
             kl_weight: float = 1e-6) -> torch.Tensor:
    """LDM's autoencoder objective without its perceptual and adversarial
    terms.

    Per image: the L1 reconstruction error summed over pixels, plus
    ``kl_weight`` times the KL divergence of the posterior from ``N(0, I)``
    summed over the latent; averaged over the batch.  ``1e-6`` is the weight
    of Stable Diffusion's autoencoder: enough to keep latents bounded, far
    too little to make them standard normal.
    """
    if not math.isfinite(kl_weight) or kl_weight < 0:
        raise ValueError(f"vae_loss: kl_weight must be a finite number "
                         f">= 0, got {kl_weight!r}; latent diffusion uses "
                         f"1e-6")
    recon, posterior = model(x, generator)
    rec = (recon - x).abs().flatten(1).sum(1)
    return (rec + kl_weight * posterior.kl()).mean()


def _digits(images: torch.Tensor, where: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1:] != (1, 28, 28):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{where} needs digits of shape (N, 1, 28, 28) in [-1, 1], got {got}; "
                         f"use x[:, None] for (N, 28, 28) and x * 2 - 1 for [0, 1] images")
    if len(images) == 0:
        raise ValueError(f"{where} got no images; pass at least one digit")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.001 or hi > 1.001:
        raise ValueError(f"{where} needs digits in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]; "
                         f"use x * 2 - 1 for [0, 1] images")
    return images


@torch.no_grad()
def encode_dataset(model: DigitAutoencoder, images: torch.Tensor,
                   batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and standard deviations ``(N, 4, 8, 8)`` of ``images`` (CPU float32).

    A latent diffusion model trains on samples ``mean + std * eps`` of these, drawn afresh
    each time a digit is used, as LDM does; storing both is enough.
    """
    images = _digits(images, "encode_dataset")
    dev = next(model.parameters()).device
    means, stds = [], []
    with eval_mode(model):
        for chunk in images.split(batch_size):
            post = model.encode(chunk.to(dev))
            means.append(post.mean.cpu())
            stds.append(post.std.cpu())
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def latent_range(model: DigitAutoencoder, images: torch.Tensor,
                 scale_factor: float) -> torch.Tensor:
    """Per latent channel, the smallest and the largest value of the scaled
    posterior means of ``images``: a ``(2, C)`` tensor ``[low, high]``.

    A pixel sampler clips its prediction of the clean image to [-1, 1],
    the range every image lies in.  Latents have no fixed range, but they
    have a measured one: the scaled latents of the training digits.  A
    latent sampler that clips its predicted clean latent to this range
    (:func:`unet_edu.latent_diffusion.caption_sample`, ``clip_z0``) keeps
    the first steps of a schedule whose last ``alpha_bar`` is tiny from
    multiplying the network's error by ``1 / sqrt(alpha_bar)``.
    """
    if not math.isfinite(scale_factor) or scale_factor <= 0:
        raise ValueError(f"scale_factor must be a positive number, got "
                         f"{scale_factor!r}; compute it with "
                         f"latent_scale_factor")
    mean, _ = encode_dataset(model, images)
    z = scale_factor * mean.transpose(0, 1).flatten(1)  # (C, N*H*W)
    return torch.stack([z.min(1).values, z.max(1).values])


@torch.no_grad()
def latent_scale_factor(model: DigitAutoencoder, images: torch.Tensor, generator=None) -> float:
    """``1 / std`` of posterior samples of ``images``: the number latents are multiplied by.

    This is how latent diffusion's ``scale_by_std`` option set the scale: encode a batch,
    sample ``z`` from the posterior, take the standard deviation of all its numbers
    (``z.flatten().std()``, around their overall mean) and keep ``1 / std``.  Rombach et al.
    did it for Stable Diffusion's autoencoder and got 0.18215 (latents with a standard
    deviation of about 5.5).  Scaled latents have unit variance, the variance of the noise
    that diffusion adds, so the noise schedule means the same in latent space as in pixels.
    """
    mean, std = encode_dataset(model, images)
    noise = torch.randn(mean.shape, generator=generator)
    z = mean + std * noise
    return float(1.0 / z.flatten().std())


@torch.no_grad()
def latent_statistics(model: DigitAutoencoder, images: torch.Tensor, generator=None) -> dict:
    """What the latents of ``images`` look like, as plain numbers.

    ``mean`` and ``std`` of all posterior samples; ``channel_mean``/``channel_std`` per latent
    channel; ``posterior_std``, the encoder's own mean standard deviation (how noisy a latent
    is compared with its spread: small means the KL term hardly mattered); ``kl_per_image``,
    the mean KL divergence from ``N(0, I)`` in nats; and ``scale_factor`` (``1 / std``).
    """
    mean, std = encode_dataset(model, images)
    z = mean + std * torch.randn(mean.shape, generator=generator)
    var = std.square()
    kl = 0.5 * (mean.square() + var - 1 - var.clamp_min(1e-30).log()).flatten(1).sum(1)
    return {"mean": float(z.mean()), "std": float(z.flatten().std()),
            "channel_mean": [round(float(v), 4) for v in z.mean((0, 2, 3))],
            "channel_std": [round(float(v), 4) for v in z.transpose(0, 1).flatten(1).std(1)],
            "posterior_std": float(std.mean()), "kl_per_image": float(kl.mean()),
            "scale_factor": float(1.0 / z.flatten().std())}


@torch.no_grad()
def reconstruction_error(model: DigitAutoencoder, images: torch.Tensor,
                         batch_size: int = 500) -> dict:
    """How well the autoencoder reproduces ``images`` (in [-1, 1]), on the [0, 1] pixel scale.

    Reconstructions decode the posterior *mean*, as a latent diffusion sample is decoded
    without extra noise.  Returns ``l1`` (mean absolute error per pixel), ``rmse`` and
    ``psnr`` (dB, peak 1), plus ``l1_per_image`` (a tensor, for the worst cases).
    """
    images = _digits(images, "reconstruction_error")
    dev = next(model.parameters()).device
    errs = []
    with eval_mode(model):
        for chunk in images.split(batch_size):
            rec = model.decode(model.encode(chunk.to(dev)).mode()).clamp(-1, 1).cpu()
            errs.append((rec - chunk) / 2)  # differences on the [0, 1] scale
    diff = torch.cat(errs)
    mse = float(diff.square().mean())
    return {"l1": float(diff.abs().mean()), "rmse": math.sqrt(mse),
            "psnr": 10 * math.log10(1.0 / max(mse, 1e-12)),
            "l1_per_image": diff.abs().flatten(1).mean(1)}
