"""Models that ship with the package, trained by ``python -m tools.train_pretrained NAME``.

* ``"digits-ddpm"`` — a class-conditional :class:`~unet_edu.models.DiffusionUNet` for 28x28
  MNIST digits in [-1, 1] (cosine schedule, 1,000 steps, EMA weights, labels 0-9 and 10 for "no
  label", trained with classifier-free label dropout).  :func:`load` returns a
  :class:`Pretrained` with ``.model`` and ``.schedule``, ready for
  :func:`~unet_edu.diffusion.ddpm_sample` / :func:`~unet_edu.diffusion.ddim_sample`.
* ``"digit-classifier"`` — the :class:`~unet_edu.metrics.DigitClassifier` whose features the
  Fréchet distance of :mod:`unet_edu.metrics` uses (inputs in [0, 1]).
* ``"digits-vae"`` — the :class:`~unet_edu.latent.DigitAutoencoder` of chapter 7 (digits in
  [-1, 1] <-> 4 x 8 x 8 latents); its ``info.extra`` records the latent scale factor and the
  measured reconstruction error and latent statistics.
* ``"digits-ldm"`` — the :class:`~unet_edu.models.TextConditionedUNet` that generates those
  latents from captions (EMA weights, cosine schedule); use both through
  :meth:`unet_edu.latent_diffusion.LatentDiffusion.from_pretrained`.  These two are trained
  by ``python -m tools.train_latent vae`` and ``... ldm``; ``... studies`` then stores what
  chapter 7 measures on them (``digits-ldm-studies.json``, read by
  :func:`unet_edu.latent_diffusion.shipped_studies`).

Besides these, :mod:`unet_edu.pretrained.experiments` ships the trained runs behind the
chapters' experiments (several seeds of each compared network), and
:mod:`unet_edu.pretrained.sweep` the stored sampler sweeps of ``digits-ddpm``, and
:mod:`unet_edu.pretrained.snapshots` samples from points of its training.

Everything is read from files inside the package: no network is needed.  The readable copy
next to the weights (``<name>.safetensors.json``) records the configuration, a summary of the
loss history (the full history is in the weights file) and how the model was trained (steps,
wall time, final loss, data).

**Checksums.**  Every shipped file (any ``.safetensors`` or ``.json`` file in this folder and its
subfolders: weights, their readable copies, stored sweeps, experiment runs) is listed with its
SHA-256 in ``SHA256SUMS``, in the format of the ``sha256sum`` command.  Loading a shipped file
(:func:`load`, :func:`~unet_edu.pretrained.experiments.load_runs`,
:func:`~unet_edu.pretrained.snapshots.load`, the stored sweeps) first checks it with
:func:`verify`: a file that differs from its checksum (a flipped bit, a truncated download, a
placeholder instead of the file) raises :class:`ChecksumError`, which names the file and the fix,
instead of sampling from damaged weights without a word.  Each file is hashed once per process
(again only if it changes).  After a deliberate retrain, ``python -m tools.checksums`` (in the
repository) rewrites the manifest; ``--check`` verifies every file.

Example::

    from unet_edu.pretrained import load
    from unet_edu.diffusion import ddim_sample
    ddpm = load("digits-ddpm")
    x = ddim_sample(ddpm.model, ddpm.schedule, (10, 1, 28, 28), steps=50, y=torch.arange(10)).x
    images = (x + 1) / 2   # back to [0, 1]
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["load", "available", "Pretrained", "path_of", "verify", "ChecksumError",
           "ChecksumWarning", "shipped_files", "file_sha256", "read_manifest", "check_manifest",
           "MANIFEST", "SHIPPED_SUFFIXES"]

HERE = Path(__file__).resolve().parent
_FILES = {"digits-ddpm": "digits-ddpm.safetensors", "digit-classifier": "digit-classifier.safetensors"}
_FILES.update({"digits-vae": "digits-vae.safetensors", "digits-ldm": "digits-ldm.safetensors"})
_TRAINERS = {"digits-vae": "tools.train_latent vae", "digits-ldm": "tools.train_latent ldm"}

MANIFEST = "SHA256SUMS"  # in HERE: one line per shipped file, "<sha256>  <path below HERE>"
SHIPPED_SUFFIXES = (".safetensors", ".json")
_FIX_FILE = ("reinstall the package (pip install --force-reinstall unet-edu) or, in the "
             "repository, restore the file with git checkout; after a deliberate retrain, "
             "refresh the manifest with python -m tools.checksums")


class ChecksumError(ValueError):
    """A shipped file does not match its checksum in the manifest (or the manifest is unusable)."""


class ChecksumWarning(UserWarning):
    """A file in the shipped folder that the manifest does not list (a new run, not yet added)."""


def _is_shipped(rel: Path) -> bool:
    """Files that ship: the suffixes above, outside hidden folders (a save's temporary folder)
    and private ones (``_work``, ``__pycache__``)."""
    return rel.suffix in SHIPPED_SUFFIXES and not any(
        part.startswith((".", "_")) for part in rel.parts)


def shipped_files(root: Path | None = None) -> list[str]:
    """Every shipped file under ``root`` (default: this folder), as sorted paths relative to it
    with ``/`` separators, the way the manifest names them."""
    root = Path(HERE if root is None else root)
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        for name in files:
            rel = (Path(folder) / name).relative_to(root)
            if _is_shipped(rel):
                found.append(rel.as_posix())
    return sorted(found)


def file_sha256(path) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits (what ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_LINE = re.compile(r"^([0-9a-f]{64}) [ *](\S.*)$")


def read_manifest(root: Path | None = None) -> dict:
    """``{relative path: sha256}`` from the manifest in ``root`` (default: this folder)."""
    path = Path(HERE if root is None else root) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ChecksumError(f"the checksum manifest {path} is missing, so the shipped files "
                            f"cannot be checked; {_FIX_FILE}") from err
    sums = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _LINE.match(line)
        if not match:
            raise ChecksumError(f"line {number} of {path} is not '<sha256>  <file>' "
                                f"({line[:60]!r}); {_FIX_FILE}")
        sums[match[2]] = match[1]
    return sums


_manifests: dict = {}  # manifest path -> (its stat, its contents)
_digests: dict = {}  # file path -> (its stat, its sha256)


def _stamp(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _cached(cache: dict, path: Path, compute):
    """``compute(path)``, remembered until the file changes (size, time or inode)."""
    stamp = _stamp(os.stat(path))
    hit = cache.get(str(path))
    if hit is None or hit[0] != stamp:
        hit = cache[str(path)] = (stamp, compute(path))
    return hit[1]


def verify(path) -> None:
    """Check a shipped file against the manifest; files outside this folder pass unchecked.

    Raises :class:`ChecksumError` (naming the file and the fix) when the file differs from its
    checksum, and warns with :class:`ChecksumWarning` when the manifest does not list it yet.
    The result is cached per file for as long as the file does not change.
    """
    root = Path(HERE).resolve()
    path = Path(path).resolve()
    try:
        rel = path.relative_to(root)
    except ValueError:
        return
    if not _is_shipped(rel):
        return
    manifest = root / MANIFEST
    try:
        sums = _cached(_manifests, manifest, lambda p: read_manifest(p.parent))
    except FileNotFoundError:
        sums = read_manifest(root)  # raises the error that names the fix
    key = rel.as_posix()
    if key not in sums:
        warnings.warn(f"{key} is not listed in {manifest}, so it cannot be checked; after "
                      f"adding or retraining shipped files, run python -m tools.checksums",
                      ChecksumWarning, stacklevel=3)
        return
    actual = _cached(_digests, path, file_sha256)
    if actual != sums[key]:
        raise ChecksumError(
            f"the shipped file {path} does not match its checksum in {MANIFEST} (sha256 "
            f"{actual[:12]}..., expected {sums[key][:12]}...): it is damaged or was changed; "
            f"{_FIX_FILE}")


def check_manifest(root: Path | None = None) -> dict:
    """Compare every shipped file under ``root`` with the manifest there: returns
    ``{"unlisted": [...], "missing": [...], "changed": [...]}`` (all empty when they agree)."""
    root = Path(HERE if root is None else root)
    sums = read_manifest(root)
    files = shipped_files(root)
    present = set(files)
    return {"unlisted": [f for f in files if f not in sums],
            "missing": sorted(f for f in sums if f not in present),
            "changed": [f for f in files if f in sums and file_sha256(root / f) != sums[f]]}


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
    """Names of the shipped models whose files are present (what :func:`load` can load).

    A model registered here but not trained yet (a new chapter's, before its training command
    has run) is left out; :func:`load` names the command that makes it.
    """
    return sorted(name for name, file in _FILES.items() if (HERE / file).exists())


def path_of(name: str) -> Path:
    """The ``.safetensors`` file of a shipped model (present or not yet trained)."""
    if name not in _FILES:
        raise ValueError(f"unknown pretrained model {name!r}; known: {', '.join(sorted(_FILES))}")
    return HERE / _FILES[name]


def load(name: str, device=None) -> Pretrained:
    """Load a shipped model by name (see the module docstring), offline, in eval mode.

    ``device`` defaults to :func:`unet_edu.device`.  Unknown names raise a ``ValueError`` that
    lists the available ones; a file that fails its checksum a :class:`ChecksumError`.
    """
    from ..runtime import device as best_device
    from ..checkpoints import load_checkpoint

    path = path_of(name)
    if not path.exists():
        raise FileNotFoundError(
            f"{path.name} is missing from the installed package; rebuild it with "
            f"python -m {_TRAINERS.get(name, 'tools.train_pretrained ' + name)}"
        )
    dev = torch.device(device) if device is not None else best_device()
    verify(path)
    if name == "digit-classifier":
        from ..metrics import DigitClassifier

        # The classifier is not one of unet_edu.models, so its class is named here.
        model, info = load_checkpoint(path, model_class=DigitClassifier)
        return Pretrained(name, model.to(dev).eval(), None, info, (0.0, 1.0))
    if name == "digits-vae":
        from ..latent import DigitAutoencoder

        model, info = load_checkpoint(path, model_class=DigitAutoencoder)
        return Pretrained(name, model.to(dev).eval(), None, info, (-1.0, 1.0))
    from ..diffusion import NoiseSchedule

    model, info = load_checkpoint(path)
    tr = info.extra.get("training", {})
    schedule = NoiseSchedule(tr.get("schedule", "cosine"),
                             tr.get("num_timesteps", model.config["num_timesteps"]))
    return Pretrained(name, model.to(dev).eval(), schedule, info, (-1.0, 1.0))
