"""unet_edu: the code behind the book *U-Net, from segmentation to diffusion*.

One concept per module (``help(unet_edu.<module>)`` says more about each):

* :mod:`unet_edu.runtime` — device, seeding, training budget, ``eval_mode``;
* :mod:`unet_edu.blocks` — DoubleConv, ResBlock, SelfAttention, CrossAttention, AttentionGate, ...;
* :mod:`unet_edu.models` — NaiveCNN, UNet2015 and its variants (one shared skeleton), DiffusionUNet;
* :mod:`unet_edu.validation` — input checks whose errors name the fix;
* :mod:`unet_edu.receptive_field` — theoretical, exact and effective receptive fields;
* :mod:`unet_edu.data` — MNIST (offline fallback included), synthetic cells;
* :mod:`unet_edu.segmentation` — the 2015 recipe: weight maps, elastic deformation, overlap-tile,
  IoU and Dice;
* :mod:`unet_edu.diffusion` — noise schedules, the loss, DDPM and DDIM steps and samplers;
* :mod:`unet_edu.metrics` — a digit classifier and the Fréchet distance in its feature space;
* :mod:`unet_edu.train` — the training loop and safetensors checkpoints;
* :mod:`unet_edu.progress` — progress bars while running, one summary line when done;
* :mod:`unet_edu.pretrained` — the trained models shipped with the package, and their stored
  sampler sweep;
* :mod:`unet_edu.viz` — figures;
* :mod:`unet_edu.diagrams` — architecture and receptive-field diagrams drawn from the models;
* :mod:`unet_edu.widgets` — the interactive explorers;
* :mod:`unet_edu.exercises` — ``check_...`` helpers for the chapters' exercises;
* :mod:`unet_edu.claims` — ``check_claim``: a chapter's stated finding, checked by its numbers.

The maintenance commands (executing the notebooks, re-training the shipped models, benchmarks)
live in the repository's ``tools/`` folder, not in the installed package.
"""

from .runtime import budget, device, seed_everything

__version__ = "0.1.0"
__all__ = ["device", "seed_everything", "budget", "__version__"]
