"""Checkpoints: saving a training run's state, and loading it back only after checking it.

Checkpoints are ``.safetensors`` files — tensors only, nothing is unpickled on load — with the
model's class name, its ``config``, the step and the loss history (a :class:`History`) as JSON
in the file's metadata, plus a copy of that JSON next to it for people to read
(``<file name>.json``, e.g. ``run.safetensors.json``, so no two checkpoints share one).  The
weights file is the authority: it carries its own metadata, the JSON copy is only for reading,
and it summarises the loss history (:func:`history_summary`) instead of repeating thousands of
numbers: the history is stored once, in the weights file (:func:`read_checkpoint_info`).
:func:`unet_edu.train.fit` saves and resumes its runs with these functions.

What protects a checkpoint:

* **Saves are atomic.**  Both files are written into a private temporary folder next to the
  checkpoint (``.<name>.<random>.partial``) and only then renamed over the old ones, so a crash,
  a full disk or a kill never leaves half a checkpoint, and a save that raises replaces neither
  file.  A replaced file keeps its permissions; a new one gets the usual ones (the umask).  A
  killed save's temporary folder is removed by a later save, but only once it is provably
  abandoned (its lock died with its process), so processes saving to one path at the same time
  never remove each other's files.  Write-protected checkpoints are never replaced.  (How the
  files are written is :mod:`unet_edu._safe_write`; this module decides what goes into them.)
* **Only finite weights are saved.**  :func:`save_checkpoint` refuses weights or optimizer
  state that hold NaN or infinite values, and leaves the file on disk as it was.
* **A file is checked before anything is built from it.**  :func:`load_checkpoint` checks the
  metadata, checks the stored config against the constructor, builds the model on PyTorch's
  ``meta`` device (no memory) to compare every tensor's name, shape and dtype with the file, and
  checks optimizer and random states, all before it changes a model, an optimizer or a
  generator.  So a damaged or crafted file is an error that names it, never a half-loaded
  model or a 32 GB allocation.

:class:`History`, the loss per step that :func:`~unet_edu.train.fit` returns, is defined here
because every checkpoint records one.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ._safe_write import (_check_checkpoint_path, _file_among_folders, _os_error,
                          _path_argument, _write_pair, sidecar_path)
from .models import MODELS
from .models.config import check_config

__all__ = ["History", "CheckpointInfo", "save_checkpoint", "load_checkpoint",
           "read_checkpoint_info", "sidecar_path", "history_summary", "readable_record"]

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


def history_summary(history: dict) -> dict:
    """What the readable JSON copy of a checkpoint says about its loss history (a
    :meth:`History.to_dict`): how many steps, the first and the last, and the mean loss over
    the first and the last 100.  The full history is stored once, in the weights file."""
    losses = history.get("losses", [])
    k = min(100, len(losses))

    def mean(values):
        return sum(values) / len(values) if values else None

    return {"recorded_steps": len(losses),
            "first_step": history["steps"][0] if history.get("steps") else None,
            "last_step": history["steps"][-1] if history.get("steps") else None,
            "mean_loss_first_100": mean(losses[:k]), "mean_loss_last_100": mean(losses[-k:]),
            "full_history": "in the weights file's metadata: "
                            "unet_edu.train.read_checkpoint_info(path).history"}


@dataclass
class CheckpointInfo:
    """What a checkpoint records besides the tensors."""

    model: str
    config: dict
    step: int = 0
    history: History = field(default_factory=History)
    extra: dict = field(default_factory=dict)


def _non_finite(named) -> list:
    """Names of the floating tensors in ``named`` (name, tensor pairs) holding NaN or inf.

    One device synchronisation for all tensors together, not one per tensor.
    """
    pairs = [(k, v) for k, v in named if v.is_floating_point() and v.numel()]
    if not pairs:
        return []
    device = pairs[0][1].device
    ok = torch.stack([torch.isfinite(v).all().to(device) for _, v in pairs]).tolist()
    return [k for (k, _), good in zip(pairs, ok) if not good]


def _shown(names: list, most: int = 3) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------
def _check_finite(tensors: dict, path: Path) -> None:
    bad = _non_finite(tensors.items())
    if bad:
        raise FloatingPointError(
            f"refusing to save {path}: the weights hold NaN or infinite values (in "
            f"{_shown(bad)}; training diverged); the file on disk was left as it was. Resume "
            f"from it with a smaller lr"
        )


def save_checkpoint(path, model, *, optimizer=None, generator=None, step: int = 0,
                    history: History | None = None, extra: dict | None = None) -> Path:
    """Save weights (and optionally optimizer and generator state) to ``path`` atomically.

    ``path`` should end in ``.safetensors``; the JSON description is also written to
    :func:`sidecar_path` (``path`` plus ``.json``).  ``extra`` is any JSON-friendly dict (e.g.
    training settings).  Weights or optimizer state with NaN/inf raise a
    :class:`FloatingPointError` and leave any existing checkpoint untouched; so does every
    failure to write (a full disk, a read-only folder, a write-protected file), as an
    ``OSError`` that names the path and the fix.  A symbolic link is followed: the file it
    points to is replaced, the link stays.
    """
    path = _path_argument(path, "save_checkpoint: path")
    _check_checkpoint_path(path)
    if not hasattr(model, "config"):
        raise ValueError("save_checkpoint needs a unet_edu model (one with a .config dict)")
    if extra is not None and not isinstance(extra, dict):
        raise ValueError(f"save_checkpoint: extra must be a dict, got {type(extra).__name__}")
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
    try:
        text = json.dumps(meta)
    except (TypeError, ValueError) as err:
        raise ValueError(f"save_checkpoint: the metadata of {path} cannot be written as JSON "
                         f"({err}); extra= and the model's config must hold numbers, strings, "
                         f"lists and dicts only") from err
    readable = readable_record(meta)
    size = sum(t.numel() * t.element_size() for t in tensors.values()) + 2 * len(text) + 4096
    _write_pair(path, lambda tmp: save_file(tensors, str(tmp), metadata={"unet_edu": text}),
                readable, size)
    return path


def readable_record(meta: dict) -> str:
    """The readable JSON copy of a checkpoint's metadata ``meta``: indented, with the loss
    history summarised (:func:`history_summary`), so the history is not stored twice."""
    return json.dumps({**meta, "history": history_summary(meta.get("history", {}))}, indent=1)


# --------------------------------------------------------------------------------------------
# Reading and checking checkpoints
# --------------------------------------------------------------------------------------------
_FIX = "it is not a usable checkpoint: save it again, or delete it and train from scratch"
_RNG_KEYS = ("rng.generator", "rng.torch")


def _readable_file(path: Path) -> None:
    """Say precisely why ``path`` cannot be opened, if it cannot: missing, a folder, a broken
    or looping link, a folder or a file without read permission."""
    try:
        st = os.stat(path)
    except FileNotFoundError as err:
        if os.path.islink(path):
            raise FileNotFoundError(
                errno.ENOENT, f"no checkpoint at {path}: it is a symbolic link to "
                              f"{os.readlink(path)}, which does not exist; fix the link or pass "
                              f"the file itself") from err
        raise FileNotFoundError(errno.ENOENT, f"no checkpoint at {path}") from err
    except NotADirectoryError as err:
        raise FileNotFoundError(errno.ENOENT, f"no checkpoint at {path}: "
                                              f"{_file_among_folders(path)} is a file, not a "
                                              f"folder") from err
    except PermissionError as err:
        raise _os_error(err, f"cannot look for {path}: permission denied on its folder; "
                             f"make the folder readable (chmod u+rx) or copy the file "
                             f"elsewhere") from err
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{path} is a symbolic link that leads back to itself (a loop), "
                             f"not a checkpoint; fix or remove the link") from err
        raise
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"checkpoint path {path} is a directory, not a file; pass the "
                         f".safetensors file inside it")
    try:
        with open(path, "rb"):
            pass
    except PermissionError as err:
        raise _os_error(err, f"cannot read checkpoint {path}: permission denied (mode "
                             f"{stat.S_IMODE(st.st_mode):03o}); the file itself may be fine: "
                             f"make it readable (chmod u+r) or read it as its owner") from err


def _damaged(path: Path, what: str) -> ValueError:
    return ValueError(f"checkpoint {path} has damaged metadata ({what}); {_FIX}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_meta(meta, path: Path) -> None:
    """The metadata must have the shape :func:`save_checkpoint` writes, field by field."""
    if not isinstance(meta, dict) or "model" not in meta or "config" not in meta:
        raise ValueError(f"checkpoint {path} has no model name or config in its metadata; {_FIX}")
    if meta.get("format", FORMAT) != FORMAT:
        raise ValueError(f"checkpoint {path} is in format {meta['format']!r}, and this version "
                         f"of unet_edu reads {FORMAT!r}; load it with the version that wrote it")
    if not isinstance(meta["model"], str) or not meta["model"]:
        raise _damaged(path, f"the model name is {meta['model']!r}, not a class name")
    if not isinstance(meta["config"], dict):
        raise _damaged(path, f"the config is a {type(meta['config']).__name__}, not a dict")
    step = meta.get("step", 0)
    if not _is_int(step) or step < 0:
        raise _damaged(path, f"step is {step!r}, not a whole number >= 0")
    history = meta.get("history", {})
    if not isinstance(history, dict) or not set(history) <= {"steps", "losses"}:
        raise _damaged(path, "the history is not a dict of 'steps' and 'losses'")
    steps, losses = history.get("steps", []), history.get("losses", [])
    if not (isinstance(steps, list) and isinstance(losses, list) and len(steps) == len(losses)
            and all(map(_is_int, steps)) and all(map(_is_number, losses))):
        raise _damaged(path, "the history must be two lists of equal length, whole step "
                             "numbers and losses")
    if not isinstance(meta.get("extra", {}), dict):
        raise _damaged(path, "extra is not a dict")
    opt = meta.get("optimizer")
    if opt is not None:
        groups = opt.get("param_groups") if isinstance(opt, dict) else None
        if not (isinstance(groups, list) and isinstance(opt.get("scalars"), dict)
                and all(isinstance(g, dict) and isinstance(g.get("params"), list)
                        and all(map(_is_int, g["params"])) for g in groups)):
            raise _damaged(path, "the optimizer state is not in the form save_checkpoint "
                                 "writes")


def _read_checkpoint(path: Path) -> tuple[dict, dict]:
    """The metadata and tensors of a checkpoint file, checked, with errors that name the file."""
    _readable_file(path)
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
                         f"a safetensors file: {err}); {_FIX}") from err
    except json.JSONDecodeError as err:
        raise _damaged(path, str(err)) from err
    except RecursionError as err:
        raise _damaged(path, "JSON nested too deeply to be metadata") from err
    _check_meta(meta, path)
    unknown = [k for k in tensors if not k.startswith(("model.", "optim.")) and k not in _RNG_KEYS]
    if unknown:
        raise ValueError(f"checkpoint {path} holds tensors save_checkpoint never writes "
                         f"({_shown(unknown)}); {_FIX}")
    size = torch.Generator().get_state().numel()
    for key in _RNG_KEYS:
        state = tensors.get(key)
        if state is not None and (state.dtype != torch.uint8 or tuple(state.shape) != (size,)):
            raise _damaged(path, f"the random state {key} is {state.dtype} of shape "
                                 f"{tuple(state.shape)}, not {size} bytes")
    return meta, tensors


def _info(meta: dict) -> CheckpointInfo:
    return CheckpointInfo(meta["model"], meta["config"], meta.get("step", 0),
                          History(**meta.get("history", {})), meta.get("extra", {}))


def read_checkpoint_info(path) -> CheckpointInfo:
    """The :class:`CheckpointInfo` of a checkpoint (model name, config, step, history, extra)
    without building a model; errors name the file as :func:`load_checkpoint`'s do."""
    path = _path_argument(path, "read_checkpoint_info: path")
    meta, _ = _read_checkpoint(path)
    return _info(meta)


def _check_tensors(expected: dict, stored: dict, path: Path, what: str, fix: str) -> None:
    """The stored tensors must be exactly ``expected``'s: same names, shapes and dtypes."""
    problems = [f"model.{k} is missing" for k in expected if k not in stored]
    problems += [f"model.{k} is not in {what}" for k in stored if k not in expected]
    for k, want in expected.items():
        got = stored.get(k)
        if got is None:
            continue
        if tuple(got.shape) != tuple(want.shape):
            problems.append(f"model.{k} has shape {tuple(got.shape)} in the file and "
                            f"{tuple(want.shape)} in {what}")
        elif got.dtype != want.dtype:
            problems.append(f"model.{k} is {got.dtype} in the file and {want.dtype} in {what}")
    if problems:
        raise ValueError(f"checkpoint {path} does not fit {what}: {_shown(problems)}; {fix}")


class _TooManyParameters(Exception):
    pass


@contextmanager
def _parameter_limit(limit: int):
    """Stop a constructor that registers more than ``limit`` parameters."""
    register = getattr(torch.nn.modules.module, "register_module_parameter_registration_hook",
                       None)
    count = [0]

    def hook(module, name, param):
        count[0] += param is not None
        if count[0] > limit:
            raise _TooManyParameters

    handle = register(hook) if register is not None else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


def _build_checked(cls: type, config: dict, weights: dict, path: Path):
    """``cls(**config)``, but only after the config has been shown to fit the stored tensors.

    The config comes from the file, and a few bytes of it can describe a network of any size.
    So it is checked against the constructor, then the network is built on the ``meta`` device
    (shapes without memory, and no random numbers drawn) while its parameters are counted, and
    its tensors are compared with the file's.  Only then is the real network built.
    """
    check_config(cls, config, f"checkpoint {path}")
    fix = ("its config does not belong to its tensors: the file is damaged or was edited; save "
           "it again from the trained model")
    try:
        with _parameter_limit(len(weights) + 16), torch.device("meta"):
            skeleton = cls(**config)
    except _TooManyParameters:
        raise ValueError(f"checkpoint {path}: its config describes a {cls.__name__} with more "
                         f"parameters than the {len(weights)} tensors the file holds; "
                         f"{fix}") from None
    except Exception as err:
        raise ValueError(f"checkpoint {path}: its config cannot build a {cls.__name__} "
                         f"({type(err).__name__}: {err}); {fix}") from err
    _check_tensors(skeleton.state_dict(), weights, path,
                   f"the {cls.__name__} its config describes", fix)
    return cls(**config)


def _optimizer_state(optimizer, meta: dict, tensors: dict, path: Path) -> dict:
    """The saved optimizer state, checked against ``optimizer`` before anything is loaded."""
    if "optimizer" not in meta:
        raise ValueError(f"{path} holds no optimizer state; it was saved without optimizer=")
    saved = meta["optimizer"]
    ours = optimizer.state_dict()["param_groups"]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    fix = ("it was saved for another model or optimizer: resume with the model and settings "
           "that wrote it, or start afresh under a new checkpoint path")
    sizes = [len(g["params"]) for g in saved["param_groups"]]
    if sizes != [len(g["params"]) for g in ours]:
        raise ValueError(f"{path} holds optimizer state for parameter groups of sizes {sizes}, "
                         f"but this optimizer has {[len(g['params']) for g in ours]}; {fix}")
    ids = [i for g in saved["param_groups"] for i in g["params"]]
    if len(set(ids)) != len(ids):
        raise _damaged(path, "the optimizer names one parameter twice")
    for theirs, mine in zip(saved["param_groups"], ours):
        for key, value in mine.items():
            if key != "params" and key in theirs and not _same_kind(theirs[key], value):
                raise _damaged(path, f"the optimizer setting {key} is {theirs[key]!r}")
    param_of = dict(zip(ids, params))
    state: dict = {}
    for key, value in tensors.items():
        if not key.startswith("optim."):
            continue
        parts = key.split(".", 2)
        pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
        if pid not in param_of:
            raise _damaged(path, f"the optimizer tensor {key} belongs to no parameter")
        p = param_of[pid]
        if value.dim() and (value.shape != p.shape or value.dtype != p.dtype):
            raise ValueError(f"{path}: the optimizer's {parts[2]} for a parameter of shape "
                             f"{tuple(p.shape)} ({p.dtype}) has shape {tuple(value.shape)} "
                             f"({value.dtype}); {fix}")
        if not value.dim() and not (value.is_floating_point() or value.dtype == torch.int64):
            raise _damaged(path, f"the optimizer tensor {key} is {value.dtype}")
        state.setdefault(pid, {})[parts[2]] = value
    for key, value in saved["scalars"].items():
        pid, _, name = key.partition(".")
        if not pid.isdigit() or int(pid) not in param_of or not _is_number(value):
            raise _damaged(path, f"the optimizer value {key}={value!r}")
        state.setdefault(int(pid), {})[name] = value
    bad = _non_finite((k, v) for per in state.values() for k, v in per.items()
                      if isinstance(v, torch.Tensor))
    if bad:
        raise _damaged(path, f"NaN or infinite values in the optimizer's {_shown(bad)}")
    return {"state": state, "param_groups": saved["param_groups"]}


def _same_kind(saved, ours) -> bool:
    """Could the saved optimizer setting stand in for ours (a number for a number, ...)?"""
    if isinstance(ours, bool) or ours is None:
        return isinstance(saved, bool) or saved is None
    if _is_number(ours):
        return _is_number(saved)
    if isinstance(ours, (tuple, list)):
        return isinstance(saved, list) and len(saved) == len(ours) and all(
            _same_kind(a, b) for a, b in zip(saved, ours))
    return isinstance(saved, type(ours))


def _rng_states(generator, tensors: dict, path: Path) -> tuple:
    """The saved random states, checked against what the generators accept."""
    if "rng.generator" not in tensors:
        raise ValueError(f"{path} holds no generator state; it was saved without generator=")
    states = tuple(tensors.get(k) for k in _RNG_KEYS)
    sizes = (generator.get_state().numel(), torch.get_rng_state().numel())
    for key, state, size in zip(_RNG_KEYS, states, sizes):
        if state is None or state.dtype != torch.uint8 or state.dim() != 1 or state.numel() != size:
            got = "missing" if state is None else f"{state.dtype} of shape {tuple(state.shape)}"
            raise _damaged(path, f"the random state {key} is {got}, not {size} bytes")
    return states


def _set_rng_states(generator, states: tuple, path: Path) -> None:
    """Restore both random states, or neither (a state the generator rejects changes nothing)."""
    before = (generator.get_state(), torch.get_rng_state())
    try:
        generator.set_state(states[0])
        torch.set_rng_state(states[1])
    except (RuntimeError, ValueError) as err:
        generator.set_state(before[0])
        torch.set_rng_state(before[1])
        raise _damaged(path, f"the random state is not one a generator accepts: {err}") from err


def load_checkpoint(path, model=None, *, optimizer=None, generator=None, device=None,
                    model_class: type | None = None):
    """Load a checkpoint written by :func:`save_checkpoint`.

    With ``model=None`` the model is rebuilt from the stored class name and config and
    ``(model, info)`` is returned (``model_class`` names the class when it is not one of
    :data:`unet_edu.models.MODELS`, e.g. :class:`~unet_edu.metrics.DigitClassifier`); with a
    model, its config must match the stored one (else a ``ValueError`` lists the differences)
    and only the :class:`CheckpointInfo` is returned.  ``optimizer`` and ``generator``, when
    given, get their saved state back.

    Everything is checked before anything changes (see the module docstring): a missing path
    raises ``FileNotFoundError``; an unreadable one ``PermissionError``; a directory, a broken
    link, an empty, truncated, foreign, damaged or crafted file a ``ValueError`` that names the
    file.  Tensors must match the model in name, shape and dtype: a checkpoint saved from a
    model converted with ``model.half()`` loads into a model converted the same way.
    """
    path = _path_argument(path, "load_checkpoint: path")
    meta, tensors = _read_checkpoint(path)
    info = _info(meta)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    bad = _non_finite(weights.items())
    if bad:
        raise ValueError(f"checkpoint {path} holds NaN or infinite weights (in {_shown(bad)}), "
                         f"which save_checkpoint never writes; the file is damaged: {_FIX}")

    built_here = model is None
    if built_here:
        name = meta["model"]
        cls = model_class if model_class is not None else MODELS.get(name)
        if cls is None:
            raise ValueError(f"{path} holds an unknown model {name!r}; known models: "
                             f"{sorted(MODELS)} (pass model_class= for another class)")
        if cls.__name__ != name:
            raise ValueError(f"{path} holds a {name}, not a {cls.__name__}; load it with "
                             f"load_checkpoint(path) to rebuild the right model")
        model = _build_checked(cls, meta["config"], weights, path)
    else:
        _check_same_model(model, meta, path)
        _check_tensors(model.state_dict(), weights, path, f"this {type(model).__name__}",
                       "the file was saved from another model, or damaged; to load weights "
                       "saved from a converted model (model.half()), convert this one the same "
                       "way first")
    opt_state = _optimizer_state(optimizer, meta, tensors, path) if optimizer is not None else None
    rng = _rng_states(generator, tensors, path) if generator is not None else None

    # Everything is checked: only now change the model, the optimizer and the generators.
    model.load_state_dict(weights)
    if device is not None:
        model.to(device)
    if opt_state is not None:
        try:
            optimizer.load_state_dict(opt_state)
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise ValueError(f"{path}: its optimizer state does not fit this optimizer "
                             f"({err}); resume with the settings that wrote it") from err
    if rng is not None:
        _set_rng_states(generator, rng, path)
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
