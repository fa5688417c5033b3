"""Where the code runs and how much work it may do.

Every chapter starts with three questions: which device do we have, how do we make the run
repeatable, and how long may training take?  This module answers them in one place so that
chapters stay short and behave the same on a laptop, in CI and in Colab.

* :func:`device` picks CUDA, then Apple's MPS, then the CPU.
* :func:`seed_everything` seeds Python, NumPy and torch (all devices) in one call.
* :func:`budget` says how much training to do: a small budget on the CPU (or whenever the
  environment variable ``UNET_EDU_FAST=1`` is set, as CI does), a fuller one on a GPU.
* :func:`eval_mode` runs a block of code with a model in evaluation mode and puts the model
  back the way it was.
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["device", "seed_everything", "budget", "Budget", "fast_mode", "eval_mode"]


def device() -> torch.device:
    """The best available device: ``cuda`` > ``mps`` > ``cpu``.

    Set ``UNET_EDU_DEVICE`` (e.g. ``cpu``) to override the choice.
    """
    forced = os.environ.get("UNET_EDU_DEVICE")
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's, NumPy's and torch's random generators; return a seeded CPU generator.

    The returned :class:`torch.Generator` is what the package's samplers and data code take as
    ``generator=``: drawing random numbers on the CPU and moving them to the device makes results
    identical on every device, which a global CUDA seed alone does not.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def fast_mode() -> bool:
    """True when the small budget is in force: ``UNET_EDU_FAST=1`` or no GPU."""
    flag = os.environ.get("UNET_EDU_FAST", "").strip().lower()
    if flag in {"1", "true", "yes", "on"}:
        return True
    if flag in {"0", "false", "no", "off"}:
        return device().type == "cpu"
    return device().type != "cuda"


@dataclass(frozen=True)
class Budget:
    """How much work a training run may do on this machine.

    ``tier`` is ``"fast"`` (CPU, CI, ``UNET_EDU_FAST=1``) or ``"full"`` (a CUDA GPU).
    ``steps`` and ``batch_size`` are sensible defaults for the book's small models; a chapter
    that needs other numbers uses :meth:`choose`, which keeps both tiers visible in its code.
    """

    tier: str
    steps: int
    batch_size: int
    device: torch.device

    @property
    def fast(self) -> bool:
        return self.tier == "fast"

    def choose(self, fast, full):
        """Return ``fast`` on the small budget and ``full`` on the large one."""
        return fast if self.fast else full


def budget() -> Budget:
    """The training budget for this machine (see :class:`Budget`)."""
    dev = device()
    if fast_mode():
        return Budget(tier="fast", steps=300, batch_size=64, device=dev)
    return Budget(tier="full", steps=4000, batch_size=128, device=dev)


@contextmanager
def eval_mode(model: torch.nn.Module):
    """``with eval_mode(model):`` -- evaluation mode inside the block, the old mode afterwards.

    Dropout and BatchNorm behave differently while training, so sampling and measuring need
    ``model.eval()``; restoring the previous mode (also when the block raises) lets a caller
    go on training the same model.  Gradients are not switched off: add ``torch.no_grad()``
    where they are not needed.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
