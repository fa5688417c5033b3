"""A small, honest training loop and safe checkpoints.

:func:`fit` is deliberately plain: sample a random batch, compute ``loss_fn``, take an AdamW
step, record the loss, and show progress (:mod:`unet_edu.progress`).  Every random choice (which images go into
a batch, the noise and timesteps a diffusion loss draws) comes from one seeded
:class:`torch.Generator`, and that generator is saved in the checkpoint together with the
weights and the optimizer state.  So a run that stops at step 200 and is resumed ends
bit-for-bit where an uninterrupted run ends (on the same device).

Checkpoints are ``.safetensors`` files — tensors only, nothing is unpickled on load — with the
model's class name, its ``config``, the step and the loss history as JSON in the file's
metadata, plus a copy of that JSON next to it for people to read.  Files are written to a
temporary name and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .models import build_model
from .progress import Progress

__all__ = ["History", "fit", "save_checkpoint", "load_checkpoint", "CheckpointInfo"]

FORMAT = "unet_edu-checkpoint-1"


@dataclass
class History:
    """Loss per training step."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def smoothed(self, window: int = 25) -> list[float]:
        """Running mean over the last ``window`` steps (for plots)."""
        out, total = [], 0.0
        for i, v in enumerate(self.losses):
            total += v
            if i >= window:
                total -= self.losses[i - window]
            out.append(total / min(i + 1, window))
        return out

    def to_dict(self) -> dict:
        return {"steps": self.steps, "losses": self.losses}


@dataclass
class CheckpointInfo:
    """What a checkpoint records besides the tensors."""

    model: str
    config: dict
    step: int = 0
    history: History = field(default_factory=History)
    extra: dict = field(default_factory=dict)


def _as_tuple(data) -> tuple[torch.Tensor, ...]:
    data = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    n = len(data[0])
    if any(len(d) != n for d in data):
        raise ValueError(f"all data tensors must have the same length, got {[len(d) for d in data]}")
    return data


def fit(model, loss_fn, data, *, steps: int, batch_size: int = 64, lr: float = 1e-3,
        weight_decay: float = 0.0, grad_clip: float | None = 1.0, seed: int = 0,
        checkpoint=None, checkpoint_every: int = 0, resume: bool = False, progress: bool = True,
        desc: str = "training", callback=None) -> History:
    """Train ``model`` for ``steps`` optimizer steps and return the loss history.

    ``data`` is a tensor or a tuple of tensors with the same first dimension (e.g. images and
    labels); each step draws ``batch_size`` random rows and calls
    ``loss_fn(model, batch, generator)`` with ``batch`` a tuple of tensors on the model's
    device and ``generator`` the run's CPU generator (use it for any randomness in the loss).

    ``checkpoint`` is a path; the state is saved every ``checkpoint_every`` steps (if > 0) and
    at the end.  With ``resume=True`` and an existing checkpoint, training continues from it.
    ``callback(step, loss)`` is called after every step (e.g. for a live plot).
    """
    data = _as_tuple(data)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history = History()
    start = 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        info = load_checkpoint(checkpoint, model, optimizer=optimizer, generator=gen)
        start, history = info.step, info.history
    model.train()
    bar = Progress(steps, desc, initial=start, enabled=progress)
    for step in range(start, steps):
        idx = torch.randint(0, len(data[0]), (batch_size,), generator=gen)
        batch = tuple(d[idx].to(device, non_blocking=True) for d in data)
        loss = loss_fn(model, batch, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        value = float(loss.detach())
        history.steps.append(step + 1)
        history.losses.append(value)
        bar.update(loss=value)
        if callback is not None:
            callback(step + 1, value)
        if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            save_checkpoint(checkpoint, model, optimizer=optimizer, generator=gen, step=step + 1, history=history)
    bar.close()
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, optimizer=optimizer, generator=gen, step=steps, history=history)
    return history


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path, model, *, optimizer=None, generator=None, step: int = 0,
                    history: History | None = None, extra: dict | None = None) -> Path:
    """Save weights (and optionally optimizer and generator state) to ``path`` atomically.

    ``path`` should end in ``.safetensors``; the JSON description is also written to the same
    name with ``.json``.  ``extra`` is any JSON-friendly dict (e.g. training settings).
    """
    path = Path(path)
    if not hasattr(model, "config"):
        raise ValueError("save_checkpoint needs a unet_edu model (one with a .config dict)")
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "model": type(model).__name__,
        "config": model.config,
        "step": int(step),
        "history": (history or History()).to_dict(),
        "extra": extra or {},
    }
    if optimizer is not None:
        state = optimizer.state_dict()
        scalars = {}
        for pid, pstate in state["state"].items():
            for key, value in pstate.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{pid}.{key}"] = value
        meta["optimizer"] = {"param_groups": state["param_groups"], "scalars": scalars}
    if generator is not None:
        tensors["rng.generator"] = generator.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
    text = json.dumps(meta)
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"unet_edu": text}))
    _atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))
    return path


def load_checkpoint(path, model=None, *, optimizer=None, generator=None, device=None):
    """Load a checkpoint written by :func:`save_checkpoint`.

    With ``model=None`` the model is rebuilt from the stored class name and config and
    ``(model, info)`` is returned; with a model, its config must match the stored one (else a
    ``ValueError`` lists the differences) and only the :class:`CheckpointInfo` is returned.
    ``optimizer`` and ``generator``, when given, get their saved state back.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    with safe_open(str(path), framework="pt") as f:
        meta_text = (f.metadata() or {}).get("unet_edu")
        if meta_text is None:
            raise ValueError(f"{path} is not a unet_edu checkpoint (no 'unet_edu' metadata)")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(meta_text)
    hist = History(**meta.get("history", {}))
    info = CheckpointInfo(meta["model"], meta["config"], meta.get("step", 0), hist, meta.get("extra", {}))

    built_here = model is None
    if built_here:
        model = build_model(meta["model"], meta["config"])
    else:
        _check_same_model(model, meta, path)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(weights)
    if device is not None:
        model.to(device)

    if optimizer is not None:
        if "optimizer" not in meta:
            raise ValueError(f"{path} holds no optimizer state; it was saved without optimizer=")
        state: dict = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = value
        for key, value in meta["optimizer"]["scalars"].items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    if generator is not None:
        if "rng.generator" not in tensors:
            raise ValueError(f"{path} holds no generator state; it was saved without generator=")
        generator.set_state(tensors["rng.generator"])
        torch.set_rng_state(tensors["rng.torch"])
    return (model, info) if built_here else info


def _check_same_model(model, meta: dict, path: Path) -> None:
    name = type(model).__name__
    if name != meta["model"]:
        raise ValueError(
            f"{path} holds a {meta['model']}, not a {name}; load it with load_checkpoint(path) "
            f"to rebuild the right model"
        )
    ours, theirs = model.config, meta["config"]
    diff = [k for k in sorted(set(ours) | set(theirs)) if _norm(ours.get(k)) != _norm(theirs.get(k))]
    if diff:
        detail = ", ".join(f"{k}: checkpoint {theirs.get(k)!r} vs model {ours.get(k)!r}" for k in diff)
        raise ValueError(
            f"{path} was saved from a different {name} configuration ({detail}); build the model "
            f"with {name}(**info.config) or call load_checkpoint(path) without a model"
        )


def _norm(v):
    return json.loads(json.dumps(v))
