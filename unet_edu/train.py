"""The training loop: :func:`fit`.

:func:`fit` is deliberately plain: sample a random batch, compute ``loss_fn``, take an AdamW
step, record the loss, and show progress (:mod:`unet_edu.progress`).  Every random choice
(which images go into a batch, the noise and timesteps a diffusion loss draws) comes from one
seeded :class:`torch.Generator`, and that generator is saved in the checkpoint together with
the weights and the optimizer state.  So a run that stops at step 200 and is resumed ends
bit-for-bit where an uninterrupted run ends (on the same device).

What protects a run:

* **Problems show up before the training, not after it.**  :func:`fit` checks that the
  checkpoint can be written (folder, permissions, read-only disks, name length, free space) and
  refuses to replace an existing run unless told to (``resume=True`` continues it,
  ``overwrite=True`` replaces it).
* **A diverged run never replaces a good checkpoint.**  :func:`fit` stops with a
  :class:`FloatingPointError` at the first loss that is NaN or infinite, before that step touches
  the weights, and says whether the weights, the batch or the update is to blame;
  :func:`save_checkpoint` refuses non-finite weights.

The checkpoints themselves (their format, how they are written atomically and checked before
they are loaded) are :mod:`unet_edu.checkpoints`.  Its public names (:class:`History`, the
record :func:`fit` returns, :class:`CheckpointInfo`, :func:`save_checkpoint`,
:func:`load_checkpoint`, :func:`read_checkpoint_info` and :func:`sidecar_path`) can be imported
from here as well.  :func:`checkpoint_blocks` is another kind of checkpointing: it trades a
second forward pass for activation memory during training, and writes no file.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ._safe_write import (_check_can_save, _check_checkpoint_path, _existing_file, _os_error,
                          _path_argument)
# The checkpoint names fit uses stay importable from here (``from unet_edu.train import ...``).
from .checkpoints import (FORMAT, CheckpointInfo, History, _non_finite, _shown,  # noqa: F401
                          load_checkpoint, read_checkpoint_info, save_checkpoint, sidecar_path)
from .progress import Progress

__all__ = ["History", "fit", "save_checkpoint", "load_checkpoint", "CheckpointInfo", "sidecar_path",
           "read_checkpoint_info", "checkpoint_blocks"]


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
        checkpoint=None, checkpoint_every: int = 0, resume: bool = False,
        overwrite: bool = False, progress: bool = True,
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
    at the end.  Before the first step, fit checks that the file can be written there (else an
    ``OSError`` or ``ValueError`` names the path and the fix), and an existing file at that
    path is never replaced silently: with ``resume=False`` it is a ``FileExistsError`` unless
    ``overwrite=True``.  With ``resume=True`` and an existing checkpoint, training continues
    from it: ``steps`` is the *total* number of steps, so it must be at least the checkpoint's
    step (a ``ValueError`` says so otherwise); a finished run (already at ``steps``) is loaded
    back without training or saving.  The weights, the optimizer's moments and the random
    state come from the checkpoint, but ``lr`` and ``weight_decay`` are the values passed
    here: to continue with a smaller learning rate, resume with ``lr=`` set to it.
    ``callback(step, loss)`` is called after every step (e.g. for a live plot).
    ``lr_drop_at`` (a fraction of ``steps``, e.g. 0.75) divides the learning rate by 10 from
    that step on, the classic step schedule: a noisy loss that still creeps down at a fixed
    rate settles within a few hundred steps of the drop.

    Three switches trade the book's exact, machine-independent numbers for speed where the
    device rewards them (measured in the appendix "How fast is it?"):

    * ``precision="bf16"`` runs the forward pass under bfloat16 autocast (weights, optimizer
      and loss stay float32).  Whether it pays depends on the processor: on the two CPUs the
      appendix measures (both with native bf16) it made a diffusion U-Net step 1.3 to 1.5x
      faster, but where bf16 matrix products are slower than float32 ones (no native bf16, or
      a slow implementation of it) it makes training slower.  Run the appendix's benchmark
      before choosing it.  ``fit`` never switches to bf16 by itself: the default is float32,
      also because bf16 rounding differs between CPUs and the chapters print checked numbers.
    * ``channels_last=True`` stores the model's weights (and so its activations) as NHWC,
      which GPUs' convolution kernels prefer; on the CPU it was slower.
    * ``compile=True`` trains ``torch.compile(model)``.  Compiling takes minutes on a CPU and
      did not pay there; on a GPU it fuses the small element-wise operations.

    Weights that are NaN or infinite before the first step are refused (no step can repair
    them).  A loss that is NaN or infinite stops training with a :class:`FloatingPointError`
    before the step changes the weights, saying which is to blame: the batch (NaN in the data),
    the weights (the previous update overflowed) or the loss itself; the last checkpoint on
    disk is left as it was.
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
    if checkpoint is not None:
        checkpoint = _path_argument(checkpoint, "fit: checkpoint")
        _check_checkpoint_path(checkpoint)
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
    found = checkpoint is not None and _existing_file(checkpoint)
    if found and not resume and not overwrite:
        raise FileExistsError(_occupied_message(checkpoint))
    if found and resume:
        info = read_checkpoint_info(checkpoint)
        if info.step > steps:
            raise ValueError(
                f"{checkpoint} is already at step {info.step}, past steps={steps}; steps counts "
                f"from the start of the run, so pass steps={info.step} or more to continue, or "
                f"resume=False to start afresh"
            )
        info = load_checkpoint(checkpoint, model, optimizer=optimizer, generator=gen)
        start, history = info.step, info.history
        for group in optimizer.param_groups:  # the caller's settings win over the saved ones
            group["lr"], group["weight_decay"] = lr, weight_decay
    _refuse_non_finite_weights(model)
    # A resumed run that is already finished is only loaded back: nothing is trained or saved.
    saves = checkpoint is not None and not (found and resume and start == steps)
    if saves:
        _check_can_save(checkpoint, _checkpoint_bytes(model, params, steps))
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
                f"step changed the weights{kept}. "
                + _blame_non_finite_loss(model, batch, data, step, start, lr, precision)
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
            _save_during_fit(checkpoint, model, optimizer, gen, step + 1, history)
    bar.close()
    if saves:
        _save_during_fit(checkpoint, model, optimizer, gen, steps, history)
    return history


def _occupied_message(path: Path) -> str:
    """Why fit will not train into ``path``: what is there already, and the three ways on."""
    try:
        info = read_checkpoint_info(path)
        what = f"a {info.model} run at step {info.step}"
    except (ValueError, OSError) as err:
        what = f"a file that is not a readable checkpoint ({str(err).split(';')[0]})"
    return (f"fit: {path} already holds {what}, and resume=False would replace it. Pass "
            f"resume=True to continue it (a finished run is loaded back, not trained again), "
            f"give a new checkpoint path, or pass overwrite=True to replace it")


def _refuse_non_finite_weights(model) -> None:
    bad = _non_finite(model.state_dict().items())
    if bad:
        raise FloatingPointError(
            f"fit: the model's weights hold NaN or infinite values before the first step (in "
            f"{_shown(bad)}), and no training step can repair them. Load good weights "
            f"(load_checkpoint) or build the model afresh")


def _blame_non_finite_loss(model, batch, data, step: int, start: int, lr: float,
                           precision: str) -> str:
    """Which of the batch, the weights or the loss made the loss of ``step`` non-finite."""
    bad_rows = [i for i, d in enumerate(batch) if _non_finite([(i, d)])]
    if bad_rows:
        i = bad_rows[0]
        total = int((~torch.isfinite(data[i])).sum()) if data[i].is_floating_point() else 0
        return (f"The batch drawn for this step holds NaN or infinite values (data[{i}] has "
                f"{total} in all), so the data is to blame, not the learning rate: clean it "
                f"first (torch.nan_to_num, or drop those rows)")
    bad = _non_finite(model.state_dict().items())
    if bad:
        return (f"The weights were finite when training started, but the update of step {step} "
                f"put NaN or infinite values into them ({_shown(bad)}; the gradients "
                f"overflowed): try a smaller lr (now {lr:g}) or grad_clip=1.0")
    hint = ", precision='fp32' (bf16 has fewer digits)" if precision == "bf16" else ""
    return (f"Weights and batch are finite, so the loss itself overflowed: try a smaller lr "
            f"(now {lr:g}), grad_clip=1.0{hint}, or check loss_fn for a division or log of zero")


def _checkpoint_bytes(model, params, steps: int) -> int:
    """About how large the checkpoint of this run will be: the state, AdamW's two moments per
    trainable weight, the random states and the loss history."""
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    moments = 2 * sum(p.numel() * p.element_size() for p in params)
    return state + moments + 80 * steps + 2 * 5056 + 65536


def _save_during_fit(path, model, optimizer, generator, step: int, history) -> None:
    """A save inside :func:`fit`: an ``OSError`` also says that the weights are still in memory."""
    try:
        save_checkpoint(path, model, optimizer=optimizer, generator=generator, step=step,
                        history=history)
    except OSError as err:
        raise _os_error(err, f"{err.strerror or err}. Training reached step {step} and the "
                             f"model in memory holds those weights: keep them with "
                             f"save_checkpoint(<another path>, model)") from err


# --------------------------------------------------------------------------------------------
# Activation checkpointing: less memory for a second forward pass
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
