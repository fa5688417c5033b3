"""Samples from the shipped diffusion model at points of its training, stored with the package.

A diffusion model's loss says little about its samples: it falls fast in the first thousand
steps and then creeps, while the digits go on improving for thousands of steps more.  To
show that, ``python -m tools.ddpm_snapshots`` takes the copies of the EMA weights that
``python -m tools.train_pretrained digits-ddpm --snapshots ...`` kept during the run that
produced ``digits-ddpm.safetensors``, draws the same 20 digits from each (same starting
noise, DDIM, classifier-free guidance) and scores 500 samples of each with the Fréchet
distance of :mod:`unet_edu.metrics`.  The grids and the scores are stored in
``digits-ddpm-snapshots.safetensors``: the images as one ``uint8`` tensor, the scores as
JSON in the file's metadata.  :func:`load` reads them, offline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Snapshots", "load", "SHIPPED"]

SHIPPED = Path(__file__).resolve().parent / "digits-ddpm-snapshots.safetensors"


@dataclass
class Snapshots:
    """``steps[k]``: the training step of snapshot ``k``; ``images[k]``: its grid of digits
    (``uint8``, shape ``(n, 28, 28)``, labels ``0, 1, ..., 9, 0, ...``); ``rows[k]``: its
    scores (``fd``, ``fd_sd``, ``label_accuracy``, ``loss``); ``meta``: how they were made."""

    steps: list
    images: torch.Tensor
    rows: list
    meta: dict

    def as_float(self, k: int) -> torch.Tensor:
        """Snapshot ``k``'s digits as ``(n, 1, 28, 28)`` floats in [0, 1], for plotting."""
        return self.images[k].float().div(255).unsqueeze(1)


def load(path: Path | str = SHIPPED) -> Snapshots:
    """The stored snapshots (see the module docstring).

    The shipped file is checked against its checksum first
    (:func:`unet_edu.pretrained.verify`).  A missing file names the command that writes it; a
    damaged one (truncated, foreign, with metadata or images of the wrong form) is a
    ``ValueError`` that names the file and the same command.
    """
    from safetensors import SafetensorError, safe_open

    from . import verify

    path = Path(path)
    remake = ("write it again with python -m tools.ddpm_snapshots (after python -m "
              "tools.train_pretrained digits-ddpm --snapshots ...)")
    if not path.exists():
        raise FileNotFoundError(f"{path.name} is missing; {remake}")
    verify(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("record")
            images = f.get_tensor("images") if "images" in f.keys() else None
        record = json.loads(text) if text is not None else None
    except (SafetensorError, OSError, ValueError, RecursionError) as err:
        raise ValueError(f"cannot read the snapshots in {path} (empty, truncated or not a "
                         f"safetensors file: {err}); {remake}") from err
    rows = record.get("rows") if isinstance(record, dict) else None
    if (images is None or not isinstance(rows, list) or not isinstance(record.get("meta"), dict)
            or not all(isinstance(r, dict) and isinstance(r.get("step"), int) for r in rows)):
        raise ValueError(f"{path} does not hold snapshots (a 'record' with meta and rows, and "
                         f"'images'); {remake}")
    if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(rows):
        raise ValueError(f"{path} holds images of shape {tuple(images.shape)} ({images.dtype}) "
                         f"for {len(rows)} snapshots, not uint8 grids (snapshots, n, 28, 28); "
                         f"{remake}")
    return Snapshots([r["step"] for r in rows], images, rows, record["meta"])
