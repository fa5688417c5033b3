"""unet_edu: the code behind the book *U-Net, from segmentation to diffusion*.

One concept per module:

* :mod:`unet_edu.runtime` — device, seeding, training budget;
* :mod:`unet_edu.blocks` — ResBlock, SelfAttention, CrossAttention, AttentionGate, ...;
* :mod:`unet_edu.models` — NaiveCNN, UNet2015, DiffusionUNet;
* :mod:`unet_edu.diffusion` — noise schedules, the loss, DDPM and DDIM samplers;
* :mod:`unet_edu.receptive_field` — theoretical, exact and effective receptive fields;
* :mod:`unet_edu.data` — MNIST (offline fallback included), synthetic cells, weight maps;
* :mod:`unet_edu.train` — the training loop and safetensors checkpoints;
* :mod:`unet_edu.progress` — progress bars while running, one summary line when done;
* :mod:`unet_edu.viz` — figures;
* :mod:`unet_edu.widgets` — the interactive explorers.
"""

from .runtime import budget, device, seed_everything

__version__ = "0.1.0"
__all__ = ["device", "seed_everything", "budget", "__version__"]
