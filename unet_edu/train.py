"""A small, honest training loop and safe checkpoints.

:func:`fit` is deliberately plain: sample a random batch, compute ``loss_fn``, take an AdamW
step, record the loss, and show progress (:mod:`unet_edu.progress`).  Every random choice (which images go into
a batch, the noise and timesteps a diffusion loss draws) comes from one seeded
:class:`torch.Generator`, and that generator is saved in the checkpoint together with the
weights and the optimizer state.  So a run that stops at step 200 and is resumed ends
bit-for-bit where an uninterrupted run ends (on the same device).

Checkpoints are ``.safetensors`` files — tensors only, nothing is unpickled on load — with the
model's class name, its ``config``, the step and the loss history as JSON in the file's
metadata, plus a copy of that JSON next to it for people to read (``<file name>.json``, e.g.
``run.safetensors.json``, so no two checkpoints share one).  Both files are first written to
temporary names and only then renamed over the old ones, so a crash or a failed write never
leaves half a checkpoint, and a save that raises replaces neither file.  The weights file is the
authority: it carries its own metadata, the JSON copy is only for reading.

:func:`fit` stops with a :class:`FloatingPointError` at the first loss that is NaN or infinite,
before that step touches the weights, and :func:`save_checkpoint` refuses non-finite weights,
so a diverged run never replaces a good checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .models import build_model
from .progress import Progress

__all__ = ["History", "fit", "save_checkpoint", "load_checkpoint", "CheckpointInfo", "sidecar_path",
           "read_checkpoint_info", "checkpoint_blocks"]

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
    if not data or not all(isinstance(d, torch.Tensor) for d in data):
        kinds = [type(d).__name__ for d in data]
        raise ValueError(f"fit: data must be a tensor or a tuple of tensors, got {kinds}")
    n = len(data[0])
    if any(len(d) != n for d in data):
        raise ValueError(
            f"fit: all data tensors must have the same length, got {[len(d) for d in data]}; "
            f"pass images and labels that belong together"
        )
    if n == 0:
        raise ValueError(
            f"fit: the dataset is empty (data of shape {tuple(data[0].shape)}); there is nothing "
            f"to draw batches from — check the data loading or a filter that removed everything"
        )
    return data


def _check_count(name: str, value, minimum: int) -> int:
    """``value`` must be a whole number (int, or an integral float like 3.0) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}; use {name}=int(...)")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_fit_args(steps, batch_size, lr, weight_decay, grad_clip, checkpoint_every):
    steps = _check_count("steps", steps, 0)
    batch_size = _check_count("batch_size", batch_size, 1)
    checkpoint_every = _check_count("checkpoint_every", checkpoint_every, 0)
    for name, value in (("lr", lr), ("weight_decay", weight_decay)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if grad_clip is not None and (not math.isfinite(grad_clip) or grad_clip < 0):
        raise ValueError(
            f"grad_clip must be a finite number > 0 (or None for no clipping), got {grad_clip}")
    return steps, batch_size, checkpoint_every


_PRECISIONS = ("fp32", "bf16")


def fit(model, loss_fn, data, *, steps: int, batch_size: int = 64, lr: float = 1e-3,
        weight_decay: float = 0.0, grad_clip: float | None = 1.0, seed: int = 0,
        checkpoint=None, checkpoint_every: int = 0, resume: bool = False, progress: bool = True,
        desc: str = "training", callback=None, precision: str = "fp32",
        channels_last: bool = False, compile: bool = False,
        lr_drop_at: float | None = None) -> History:
    """Train ``model`` for ``steps`` optimizer steps and return the loss history.

    ``data`` is a tensor or a tuple of tensors with the same first dimension (e.g. images and
    labels); each step draws ``batch_size`` random rows and calls
    ``loss_fn(model, batch, generator)`` with ``batch`` a tuple of tensors on the model's
    device and ``generator`` the run's CPU generator (use it for any randomness in the loss).
    Only parameters with ``requires_grad`` are optimised.

    ``checkpoint`` is a path; the state is saved every ``checkpoint_every`` steps (if > 0) and
    at the end.  With ``resume=True`` and an existing checkpoint, training continues from it:
    ``steps`` is the *total* number of steps, so it must be at least the checkpoint's step (a
    ``ValueError`` says so otherwise).  The weights, the optimizer's moments and the random
    state come from the checkpoint, but ``lr`` and ``weight_decay`` are the values passed
    here: to continue with a smaller learning rate, resume with ``lr=`` set to it.
    ``callback(step, loss)`` is called after every step (e.g. for a live plot).
    ``lr_drop_at`` (a fraction of ``steps``, e.g. 0.75) divides the learning rate by 10 from
    that step on, the classic step schedule: a noisy loss that still creeps down at a fixed
    rate settles within a few hundred steps of the drop.

    Three switches trade the book's exact, machine-independent numbers for speed where the
    device rewards them (measured in the appendix "How fast is it?"):

    * ``precision="bf16"`` runs the forward pass under bfloat16 autocast (weights, optimizer
      and loss stay float32).  On a CPU with AVX-512 BF16 it makes a diffusion U-Net step about
      1.3x faster; a CPU without it has to emulate bf16, which can make it slower.  The default is float32
      because bf16 rounding differs between CPUs, and the chapters print checked numbers.
    * ``channels_last=True`` stores the model's weights (and so its activations) as NHWC,
      which GPUs' convolution kernels prefer; on the CPU it was slower.
    * ``compile=True`` trains ``torch.compile(model)``.  Compiling takes minutes on a CPU and
      did not pay there; on a GPU it fuses the small element-wise operations.

    A loss that is NaN or infinite stops training with a :class:`FloatingPointError` before
    the step changes the weights; the last checkpoint on disk is left as it was.
    """
    steps, batch_size, checkpoint_every = _check_fit_args(
        steps, batch_size, lr, weight_decay, grad_clip, checkpoint_every)
    if precision not in _PRECISIONS:
        raise ValueError(f"fit: precision={precision!r}; use 'fp32' (the default) or 'bf16'")
    if lr_drop_at is not None and not 0 < lr_drop_at < 1:
        raise ValueError(f"fit: lr_drop_at={lr_drop_at!r} must be a fraction of the run "
                         f"between 0 and 1, e.g. 0.75, or None for a constant learning rate")
    drop_step = steps if lr_drop_at is None else int(lr_drop_at * steps)
    data = _as_tuple(data)
    device = next(model.parameters()).device
    if channels_last:
        model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile else model  # shares the weights with ``model``
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    history = History()
    start = 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        info = load_checkpoint(checkpoint, model, optimizer=optimizer, generator=gen)
        if info.step > steps:
            raise ValueError(
                f"{checkpoint} is already at step {info.step}, past steps={steps}; steps counts "
                f"from the start of the run, so pass steps={info.step} or more to continue, or "
                f"resume=False to start afresh"
            )
        start, history = info.step, info.history
        for group in optimizer.param_groups:  # the caller's settings win over the saved ones
            group["lr"], group["weight_decay"] = lr, weight_decay
    model.train()
    bar = Progress(steps, desc, initial=start, enabled=progress)
    for step in range(start, steps):
        if step == drop_step or (step == start and step > drop_step):
            for group in optimizer.param_groups:
                group["lr"] = lr / 10
        idx = torch.randint(0, len(data[0]), (batch_size,), generator=gen)
        batch = tuple(d[idx].to(device, non_blocking=True) for d in data)
        with autocast:
            loss = loss_fn(net, batch, gen)
        # Reading the loss waits for the device, but the progress bar needs it anyway; checking
        # it *before* the update keeps a NaN out of the weights.
        value = float(loss.detach())
        if not math.isfinite(value):
            bar.close()
            kept = f", and {checkpoint} was left as it was" if checkpoint is not None else ""
            raise FloatingPointError(
                f"fit: the loss became {value} at step {step + 1}; training stopped before this "
                f"step changed the weights{kept}. Try a smaller lr (now {lr:g}), grad_clip=1.0, "
                f"or look for NaN/inf values in the data"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        history.steps.append(step + 1)
        history.losses.append(value)
        bar.update(loss=value)
        if callback is not None:
            callback(step + 1, value)
        if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            save_checkpoint(checkpoint, model, optimizer=optimizer, generator=gen, step=step + 1,
                            history=history)
    bar.close()
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, optimizer=optimizer, generator=gen, step=steps,
                        history=history)
    return history


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def checkpoint_blocks(model: torch.nn.Module, block_type: type) -> int:
    """Activation checkpointing: recompute every ``block_type`` submodule during backward.

    Training keeps each layer's activations until the backward pass needs them, and in a
    U-Net they take far more memory than the weights.  Wrapped with
    :func:`torch.utils.checkpoint.checkpoint`, a block keeps only its inputs and runs its
    forward pass a second time during backward: less memory for about one extra forward pass
    of those blocks.  Changes ``model`` in place (its results and gradients are unchanged) and
    returns the number of blocks newly wrapped (0 when called twice).
    """
    import functools

    from torch.utils.checkpoint import checkpoint

    def wrapped(forward, *args, **kwargs):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    blocks = [m for m in model.modules() if isinstance(m, block_type)]
    count = 0
    for m in blocks:
        if not getattr(m, "_checkpointed", False):
            m.forward = functools.partial(wrapped, m.forward)
            m._checkpointed = True
            count += 1
    if not blocks:
        raise ValueError(f"checkpoint_blocks: {type(model).__name__} has no {block_type.__name__} "
                         f"to wrap; pass a block type it contains (e.g. ResBlock)")
    return count


def sidecar_path(path) -> Path:
    """The readable JSON copy of checkpoint ``path``: the full file name plus ``.json``.

    Keeping the whole name (``run.v1`` -> ``run.v1.json``) gives every checkpoint its own copy.
    """
    path = Path(path)
    return path.with_name(path.name + ".json")


def _check_checkpoint_path(path: Path) -> None:
    if path.suffix == ".json":
        raise ValueError(
            f"checkpoint path {path} ends in .json, the ending of the readable copies of "
            f"checkpoints; use {path.with_suffix('.safetensors').name}"
        )
    if path.is_dir():
        raise ValueError(f"checkpoint path {path} is a directory; give a file name such as "
                         f"{path / 'model.safetensors'}")


_TMP_SUFFIX = ".partial"


def _stale_temp_files(path: Path) -> list[Path]:
    """Temporary files left by a save of ``path`` (or its JSON copy) that was killed."""
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(path.name)}(\.json)?\.[A-Za-z0-9_]+{_TMP_SUFFIX}$")
    return [p for p in path.parent.iterdir() if pattern.match(p.name)]


def _temp_for(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _atomic_write(path: Path, write) -> None:
    """Write ``path`` through a temporary file in the same folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_for(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_pair(path: Path, write_weights, text: str) -> None:
    """Replace the weights file and its JSON copy as one unit.

    Both are written to temporary files first: if either write fails, nothing is replaced.
    Then the JSON copy is renamed into place and the weights last, so an interruption between
    the two renames can only leave a new JSON copy next to the old, intact weights; if the
    final rename raises, the old JSON copy is put back.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    side = sidecar_path(path)
    for stale in _stale_temp_files(path):  # left behind by a save that was killed
        stale.unlink(missing_ok=True)
    tmp_w, tmp_j = _temp_for(path), _temp_for(side)
    old_side = side.read_bytes() if side.is_file() else None
    try:
        write_weights(tmp_w)
        tmp_j.write_text(text)
        os.replace(tmp_j, side)
        try:
            os.replace(tmp_w, path)
        except BaseException:
            if old_side is None:
                side.unlink(missing_ok=True)
            else:
                _atomic_write(side, lambda t: Path(t).write_bytes(old_side))
            raise
    finally:
        tmp_w.unlink(missing_ok=True)
        tmp_j.unlink(missing_ok=True)


def _check_finite(tensors: dict, path: Path) -> None:
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise FloatingPointError(
            f"refusing to save {path}: {shown} hold NaN or infinite values (training diverged); "
            f"the file on disk was left as it was. Resume from it with a smaller lr"
        )


def save_checkpoint(path, model, *, optimizer=None, generator=None, step: int = 0,
                    history: History | None = None, extra: dict | None = None) -> Path:
    """Save weights (and optionally optimizer and generator state) to ``path`` atomically.

    ``path`` should end in ``.safetensors``; the JSON description is also written to
    :func:`sidecar_path` (``path`` plus ``.json``).  ``extra`` is any JSON-friendly dict (e.g.
    training settings).  Weights or optimizer state with NaN/inf raise a
    :class:`FloatingPointError` and leave any existing checkpoint untouched.
    """
    path = Path(path)
    _check_checkpoint_path(path)
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
    _check_finite(tensors, path)
    if generator is not None:
        tensors["rng.generator"] = generator.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
    text = json.dumps(meta)
    # The sidecar is for reading: indented, but with the (long) loss history on one line each.
    readable = json.dumps({**meta, "history": "HISTORY"}, indent=1).replace(
        '"HISTORY"', json.dumps(meta["history"]), 1)
    _write_pair(path, lambda tmp: save_file(tensors, str(tmp), metadata={"unet_edu": text}),
                readable)
    return path


def _read_checkpoint(path: Path) -> tuple[dict, dict]:
    """The metadata and tensors of a checkpoint file, with errors that name the file."""
    if path.is_dir():
        raise ValueError(f"checkpoint path {path} is a directory, not a file; pass the "
                         f".safetensors file inside it")
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    fix = "it is not a usable checkpoint: save it again, or delete it and train from scratch"
    try:
        with safe_open(str(path), framework="pt") as f:
            meta_text = (f.metadata() or {}).get("unet_edu")
            if meta_text is None:
                raise ValueError(f"{path} is not a unet_edu checkpoint (no 'unet_edu' metadata); "
                                 f"load it with safetensors.torch.load_file instead")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(meta_text)
    except (SafetensorError, OSError) as err:
        size = path.stat().st_size
        raise ValueError(f"cannot read checkpoint {path} ({size} bytes; empty, truncated or not "
                         f"a safetensors file: {err}); {fix}") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint {path} has damaged metadata ({err}); {fix}") from err
    if not isinstance(meta, dict) or "model" not in meta or "config" not in meta:
        raise ValueError(f"checkpoint {path} has no model name or config in its metadata; {fix}")
    return meta, tensors


def read_checkpoint_info(path) -> CheckpointInfo:
    """The :class:`CheckpointInfo` of a checkpoint (model name, config, step, history, extra)
    without building a model; errors name the file as :func:`load_checkpoint`'s do."""
    path = Path(path)
    meta, _ = _read_checkpoint(path)
    return CheckpointInfo(meta["model"], meta["config"], meta.get("step", 0),
                          History(**meta.get("history", {})), meta.get("extra", {}))


def load_checkpoint(path, model=None, *, optimizer=None, generator=None, device=None):
    """Load a checkpoint written by :func:`save_checkpoint`.

    With ``model=None`` the model is rebuilt from the stored class name and config and
    ``(model, info)`` is returned; with a model, its config must match the stored one (else a
    ``ValueError`` lists the differences) and only the :class:`CheckpointInfo` is returned.
    ``optimizer`` and ``generator``, when given, get their saved state back.  A missing path
    raises ``FileNotFoundError``; a directory, an empty, truncated or foreign file a
    ``ValueError`` that names the file.
    """
    path = Path(path)
    meta, tensors = _read_checkpoint(path)
    info = CheckpointInfo(meta["model"], meta["config"], meta.get("step", 0),
                          History(**meta.get("history", {})), meta.get("extra", {}))

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
