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
* :func:`env_flag` reads the package's yes/no environment variables.

Environment variables are input like any other: a value the package does not understand
(``UNET_EDU_DEVICE=cuda`` on a machine without a GPU, ``UNET_EDU_OFFLINE=maybe``) is a
``ValueError`` that names the variable, its value and the values it takes, never a raw torch
error three calls later or a silent default.  Case and surrounding spaces do not matter.
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["device", "seed_everything", "budget", "Budget", "fast_mode", "eval_mode", "env_flag"]

_YES = ("1", "true", "yes", "on")
_NO = ("0", "false", "no", "off")


def env_flag(name: str) -> bool | None:
    """The yes/no environment variable ``name``: True, False, or None when unset or empty.

    ``1``, ``true``, ``yes`` and ``on`` mean yes; ``0``, ``false``, ``no`` and ``off`` mean no
    (in any case, with spaces around them or not).  Anything else is a ``ValueError``.
    """
    raw = os.environ.get(name)
    value = (raw or "").strip().lower()
    if not value:
        return None
    if value in _YES:
        return True
    if value in _NO:
        return False
    raise ValueError(f"{name}={raw!r} is not understood; set it to 1 (or true, yes, on), to 0 "
                     f"(or false, no, off), or unset it")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def _forced_device(raw: str) -> torch.device:
    """The device ``UNET_EDU_DEVICE`` names, checked: it must parse and be present."""
    value = raw.strip().lower()
    fix = ("set it to cpu, cuda (or cuda:0, cuda:1, ...) or mps, or unset it to let the "
           "package choose")
    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"UNET_EDU_DEVICE={raw!r} is not a device; {fix}") from err
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ValueError(f"UNET_EDU_DEVICE={raw!r}, but this machine has no CUDA GPU that "
                             f"torch can use; set UNET_EDU_DEVICE=cpu or unset it")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"UNET_EDU_DEVICE={raw!r}, but this machine has {count} CUDA "
                             f"GPU(s), numbered 0 to {count - 1}; use one of those or cuda")
    elif dev.type == "mps":
        if not _mps_available():
            raise ValueError(f"UNET_EDU_DEVICE={raw!r}, but Apple's MPS is not available here; "
                             f"set UNET_EDU_DEVICE=cpu or unset it")
    elif dev.type != "cpu":
        raise ValueError(f"UNET_EDU_DEVICE={raw!r} names a {dev.type} device, which the book "
                         f"does not use; {fix}")
    return dev


def device() -> torch.device:
    """The best available device: ``cuda`` > ``mps`` > ``cpu``.

    Set ``UNET_EDU_DEVICE`` (e.g. ``cpu``) to override the choice; a value that is not a device,
    or names one this machine does not have, is a ``ValueError`` that says so.
    """
    forced = os.environ.get("UNET_EDU_DEVICE", "")
    if forced.strip():
        return _forced_device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
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
    """True when the small budget is in force: ``UNET_EDU_FAST=1`` or no GPU.

    ``UNET_EDU_FAST=0`` asks for the full budget, which an MPS GPU then gets too; on a CPU the
    budget stays small.
    """
    flag = env_flag("UNET_EDU_FAST")
    if flag:
        return True
    if flag is False:
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
