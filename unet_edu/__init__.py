"""unet_edu: the code behind the book *U-Net, from segmentation to diffusion*.

One concept per module (``help(unet_edu.<module>)`` says more about each):

* :mod:`unet_edu.runtime` — device, seeding, training budget, ``eval_mode``;
* :mod:`unet_edu.blocks` — DoubleConv, ResBlock, SelfAttention, CrossAttention, AttentionGate, ...;
* :mod:`unet_edu.models` — NaiveCNN, DnCNN, UNet2015 and its variants (one shared skeleton),
  DiffusionUNet, TextConditionedUNet and Stable Diffusion's U-Net configurations;
* :mod:`unet_edu.validation` — input checks whose errors name the fix;
* :mod:`unet_edu.receptive_field` — theoretical, exact and effective receptive fields;
* :mod:`unet_edu.data` — MNIST (bundled digits, offline), real nuclei (shipped), synthetic cells;
* :mod:`unet_edu.segmentation` — the 2015 recipe: weight maps, elastic deformation, overlap-tile,
  IoU and Dice;
* :mod:`unet_edu.diffusion` — noise schedules, the loss, DDPM and DDIM steps and samplers;
* :mod:`unet_edu.toy` — a diffusion whose score, best denoiser and probability-flow ODE are
  known exactly (data from a Gaussian mixture);
* :mod:`unet_edu.interventions` — swapping networks inside a sampler by a window of t, and
  Fréchet distances with intervals over seeds, samples and reference digits;
* :mod:`unet_edu.latent` — a KL-regularised autoencoder for digits and the latent scale factor;
* :mod:`unet_edu.captions` — measured digit attributes (thickness, width, slant) and true
  captions;
* :mod:`unet_edu.text` — a word tokenizer and a small transformer text encoder;
* :mod:`unet_edu.latent_diffusion` — text-to-image latent diffusion: caption guidance,
  cross-attention maps, and the measurements of chapter 7;
* :mod:`unet_edu.metrics` — a digit classifier and the Fréchet distance in its feature space;
* :mod:`unet_edu.train` — the training loop ``fit`` (seeded batches, AdamW, the learning-rate
  drop, checks before the first step) and activation checkpointing;
* :mod:`unet_edu.checkpoints` — safetensors checkpoints: saving, loading after checking, the
  loss ``History`` they record;
* :mod:`unet_edu._safe_write` — writing files safely: atomic saves, locked temporary folders,
  path, permission and free-space checks;
* :mod:`unet_edu.progress` — progress bars while running, one summary line when done;
* :mod:`unet_edu.pretrained` — the trained models shipped with the package, and their stored
  sampler sweep;
* :mod:`unet_edu.style` — one look for every figure: a colour per model family, sizes, colour
  bars (``style.use()``);
* :mod:`unet_edu.viz` — figures;
* :mod:`unet_edu.diagrams` — architecture and receptive-field diagrams drawn from the models;
* :mod:`unet_edu.widgets` — the interactive explorers;
* :mod:`unet_edu.exercises` — ``check_...`` helpers for the chapters' exercises;
* :mod:`unet_edu.claims` — ``check_claim`` (a chapter's stated finding, checked by its numbers)
  and ``compare`` (an effect, its interval over seeds and test items, and its verdict).

The maintenance commands (executing the notebooks, re-training the shipped models, benchmarks)
live in the repository's ``tools/`` folder, not in the installed package.
"""

from .runtime import budget, device, seed_everything

__version__ = "0.1.0"
__all__ = ["device", "seed_everything", "budget", "__version__"]
