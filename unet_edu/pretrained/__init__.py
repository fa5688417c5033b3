"""Models that ship with the package, trained by ``python -m tools.train_pretrained NAME``.

* ``"digits-ddpm"`` — a class-conditional :class:`~unet_edu.models.DiffusionUNet` for 28x28
  MNIST digits in [-1, 1] (cosine schedule, 1,000 steps, EMA weights, labels 0-9 and 10 for "no
  label", trained with classifier-free label dropout).  :func:`load` returns a
  :class:`Pretrained` with ``.model`` and ``.schedule``, ready for
  :func:`~unet_edu.diffusion.ddpm_sample` / :func:`~unet_edu.diffusion.ddim_sample`.
* ``"digit-classifier"`` — the :class:`~unet_edu.metrics.DigitClassifier` whose features the
  Fréchet distance of :mod:`unet_edu.metrics` uses (inputs in [0, 1]).

Besides these two, :mod:`unet_edu.pretrained.experiments` ships the trained runs behind the
chapters' experiments (several seeds of each compared network), and
:mod:`unet_edu.pretrained.sweep` the stored sampler sweeps of ``digits-ddpm``, and
:mod:`unet_edu.pretrained.snapshots` samples from points of its training.

Everything is read from files inside the package: no network is needed.  The readable copy
next to the weights (``<name>.safetensors.json``) records the configuration, the loss history
and how the model was trained (steps, wall time, final loss, data).

Example::

    from unet_edu.pretrained import load
    from unet_edu.diffusion import ddim_sample
    ddpm = load("digits-ddpm")
    x = ddim_sample(ddpm.model, ddpm.schedule, (10, 1, 28, 28), steps=50, y=torch.arange(10)).x
    images = (x + 1) / 2   # back to [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["load", "available", "Pretrained", "path_of"]

HERE = Path(__file__).resolve().parent
_FILES = {"digits-ddpm": "digits-ddpm.safetensors", "digit-classifier": "digit-classifier.safetensors"}


@dataclass
class Pretrained:
    """A loaded model (on the best device, in eval mode) and what is needed to use it.

    ``schedule`` is the diffusion model's :class:`~unet_edu.diffusion.NoiseSchedule` (None for
    the classifier); ``info`` is the checkpoint's :class:`~unet_edu.train.CheckpointInfo`
    (config, loss history, ``extra`` with the training record).
    """

    name: str
    model: torch.nn.Module
    schedule: object = None
    info: object = None
    value_range: tuple = field(default=(0.0, 1.0))

    def __iter__(self):  # allows ``model, schedule = load("digits-ddpm")``
        return iter((self.model, self.schedule))


def available() -> list[str]:
    """Names :func:`load` accepts."""
    return sorted(_FILES)


def path_of(name: str) -> Path:
    """The ``.safetensors`` file of a shipped model."""
    if name not in _FILES:
        raise ValueError(f"unknown pretrained model {name!r}; available: {', '.join(available())}")
    return HERE / _FILES[name]


def load(name: str, device=None) -> Pretrained:
    """Load a shipped model by name (see the module docstring), offline, in eval mode.

    ``device`` defaults to :func:`unet_edu.device`.  Unknown names raise a ``ValueError`` that
    lists the available ones.
    """
    from ..runtime import device as best_device
    from ..train import load_checkpoint

    path = path_of(name)
    if not path.exists():
        raise FileNotFoundError(
            f"{path.name} is missing from the installed package; rebuild it with "
            f"python -m tools.train_pretrained {name}"
        )
    dev = torch.device(device) if device is not None else best_device()
    if name == "digit-classifier":
        from ..metrics import DigitClassifier
        from ..train import read_checkpoint_info

        # The classifier is not one of the models build_model knows, so build it from the
        # stored config first (damaged files fail here with a message that names them).
        model = DigitClassifier(**read_checkpoint_info(path).config)
        info = load_checkpoint(path, model)
        return Pretrained(name, model.to(dev).eval(), None, info, (0.0, 1.0))
    from ..diffusion import NoiseSchedule

    model, info = load_checkpoint(path)
    tr = info.extra.get("training", {})
    schedule = NoiseSchedule(tr.get("schedule", "cosine"),
                             tr.get("num_timesteps", model.config["num_timesteps"]))
    return Pretrained(name, model.to(dev).eval(), schedule, info, (-1.0, 1.0))
