"""Re-train the models shipped with the package: ``python -m tools.train_pretrained NAME``.

``NAME`` is ``digits-ddpm`` (the class-conditional diffusion U-Net of chapter 5) or
``digit-classifier`` (the small CNN whose features the Fréchet distance uses; ``classifier`` is
accepted too).  Both train on ``unet_edu.data.mnist("train")`` with a fixed seed on whatever
device :func:`unet_edu.device` picks, and write ``<name>.safetensors`` plus its readable copy
``<name>.safetensors.json`` into ``unet_edu/pretrained/`` (or into ``--out``).

The diffusion run is built to be stopped and continued: it trains in chunks of
``--chunk`` steps, saves a working checkpoint after each chunk under ``--work`` (default
``.work/pretrained`` in the repository, outside the package), and ``--resume`` picks it up
again.  Without ``--resume`` an existing working checkpoint is never thrown away silently: the
command stops and says so, and ``--restart`` discards it deliberately.  The working checkpoint is *one* file holding the weights, the EMA weights, the
optimizer and the random state, so the EMA can never be a chunk behind the weights; the wall
time so far is kept in a small work log that is replaced atomically.  It stops after
``--steps`` steps or once ``--max-minutes`` of wall time have passed, whichever comes first, and
then writes the shipped file: the EMA weights only (no optimizer state), with the schedule, the
number of steps, the wall time and the final loss in the checkpoint's ``extra``.

A new shipped file changes its checksum: refresh the manifest with ``python -m tools.checksums``
afterwards (the command reminds you).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "unet_edu" / "pretrained"  # where the shipped files live
WORK = ROOT / ".work" / "pretrained"  # working checkpoints: outside the package, ignored by git

# The shipped diffusion model: small enough to train on two CPU cores in about an hour
# (12,000 steps of batch 64 at roughly 0.3 s per step).
DDPM_CONFIG = dict(base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=2, attention_levels=(2,),
                   num_heads=4, num_classes=10, norm_groups=8)
DDPM_TRAINING = dict(schedule="cosine", num_timesteps=1000, batch_size=64, lr=1e-3, p_uncond=0.1,
                     ema_decay=0.999, seed=0, grad_clip=1.0)
CLASSIFIER_TRAINING = dict(steps=1500, batch_size=64, lr=2e-3, weight_decay=1e-4, seed=0)


class TrainingState(nn.Module):
    """The network being trained and its EMA copy, saved together as one checkpoint.

    :func:`unet_edu.train.fit` optimises only parameters with ``requires_grad``, so the frozen
    EMA copy rides along in the checkpoint without being trained.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.ema = copy.deepcopy(model).requires_grad_(False)
        self.config = {"model": type(model).__name__, "model_config": model.config}


def _write_log(path: Path, log: dict) -> None:
    """Replace the work log atomically: a crash leaves the old log or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(json.dumps(log))
    os.replace(tmp, path)


def _read_log(path: Path) -> dict:
    try:
        log = json.loads(path.read_text())
        float(log["elapsed_s"])
    except FileNotFoundError:
        return {"elapsed_s": 0.0}
    except (ValueError, KeyError, TypeError) as err:
        raise SystemExit(
            f"the work log {path} is damaged ({err}); the working checkpoint next to it is "
            f"fine: delete the log to resume with the recorded wall time restarted at 0"
        ) from err
    return log


def _ema_update(ema, model, decay):
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1.0 - decay)
        for be, bm in zip(ema.buffers(), model.buffers()):
            be.copy_(bm)


def train_ddpm(steps: int = 12000, chunk: int = 500, max_minutes: float = 120.0, out: Path = HERE,
               work: Path = WORK, resume: bool = False, threads: int | None = None,
               snapshots: tuple[int, ...] = (), restart: bool = False) -> Path:
    from unet_edu.data import mnist
    from unet_edu.diffusion import NoiseSchedule, diffusion_loss
    from unet_edu.models import DiffusionUNet
    from unet_edu.runtime import device, seed_everything
    from unet_edu.train import History, fit, read_checkpoint_info, save_checkpoint, sidecar_path

    if threads:
        torch.set_num_threads(threads)
    cfg, tr = DDPM_CONFIG, DDPM_TRAINING
    seed_everything(tr["seed"])
    dev = device()
    digits = mnist("train")
    x = digits.images * 2 - 1  # [0, 1] -> [-1, 1]
    y = digits.labels
    schedule = NoiseSchedule(tr["schedule"], tr["num_timesteps"])
    state = TrainingState(DiffusionUNet(**cfg, num_timesteps=tr["num_timesteps"])).to(dev)
    model, ema = state.model, state.ema
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "digits-ddpm-state.safetensors"
    log_path = work / "digits-ddpm-log.json"
    log = {"elapsed_s": 0.0}
    history, done = History(), 0
    if resume and state_path.exists():
        info = read_checkpoint_info(state_path)  # fit() below loads the tensors themselves
        if info.model != type(state).__name__:
            raise SystemExit(
                f"{state_path} holds a {info.model}, not the {type(state).__name__} (weights and "
                f"EMA together) this trainer resumes from; it was written by an older version: "
                f"run without --resume to start afresh, or pass another --work folder")
        history, done = info.history, info.step
        log = _read_log(log_path)
    else:
        if state_path.exists() and not restart:
            try:
                held = f"a run stopped at step {read_checkpoint_info(state_path).step}"
            except (ValueError, OSError):
                held = "a working checkpoint that cannot be read"
            raise SystemExit(f"{state_path} holds {held}; pass --resume to continue it, or "
                             f"--restart to discard it and start again")
        state_path.unlink(missing_ok=True)
        sidecar_path(state_path).unlink(missing_ok=True)

    def loss_fn(s, batch, gen):
        return diffusion_loss(s.model, schedule, batch[0], batch[1], generator=gen,
                              p_uncond=tr["p_uncond"])

    def after_step(step, loss):
        # EMA with a warm-up, so early weights do not dominate a short run.
        _ema_update(ema, model, min(tr["ema_decay"], (1 + step) / (10 + step)))

    start = time.time() - log["elapsed_s"]
    while done < steps:
        target = min(steps, (done // chunk + 1) * chunk)
        history = fit(state, loss_fn, (x, y), steps=target, batch_size=tr["batch_size"],
                      lr=tr["lr"], grad_clip=tr["grad_clip"], seed=tr["seed"],
                      checkpoint=state_path, checkpoint_every=0, resume=True, progress=False,
                      callback=after_step)
        done = target
        log["elapsed_s"] = time.time() - start
        _write_log(log_path, log)
        if done in snapshots:
            # The EMA weights as they were at this step, for chapter 5's pictures of training
            # (tools/ddpm_snapshots.py samples them).  Written after the chunk's checkpoint, so
            # they play no part in the training itself.
            save_checkpoint(work / f"digits-ddpm-step{done:05d}.safetensors", ema, step=done)
        recent = history.losses[-chunk:]
        print(f"step {done}: mean loss over last {len(recent)} steps {sum(recent) / len(recent):.4f}, "
              f"{log['elapsed_s'] / 60:.1f} min", flush=True)
        if log["elapsed_s"] > max_minutes * 60:
            break
    final = history.losses[-200:]
    extra = {
        "training": {**tr, "steps": done, "data": digits.source, "data_range": [-1, 1],
                     "weights": "EMA of the trained weights", "device": dev.type,
                     "threads": torch.get_num_threads()},
        "wall_time_s": round(log["elapsed_s"], 1),
        "final_loss": round(sum(final) / len(final), 5),
        "final_loss_note": "mean training loss over the last 200 steps",
        "command": f"python -m tools.train_pretrained digits-ddpm --steps {steps}"
                   + (f" --threads {threads}" if threads else ""),
    }
    hist = History(history.steps, [round(v, 5) for v in history.losses])
    path = save_checkpoint(Path(out) / "digits-ddpm.safetensors", ema, step=done, history=hist, extra=extra)
    print(f"wrote {path.name}: {done} steps, {log['elapsed_s'] / 60:.1f} min, final loss {extra['final_loss']}")
    _remind_checksums(path)
    return path


def _remind_checksums(path: Path) -> None:
    if Path(path).resolve().parent == HERE.resolve():
        print("the shipped file changed: refresh its checksum with python -m tools.checksums")


def train_classifier(out: Path = HERE, threads: int | None = None) -> Path:
    from unet_edu.data import mnist
    from unet_edu.metrics import DigitClassifier
    from unet_edu.runtime import device, seed_everything
    from unet_edu.train import History, fit, save_checkpoint

    if threads:
        torch.set_num_threads(threads)
    tr = CLASSIFIER_TRAINING
    seed_everything(tr["seed"])
    dev = device()
    train, test = mnist("train"), mnist("test")
    model = DigitClassifier().to(dev)
    t0 = time.time()

    def loss_fn(m, batch, gen):
        images, labels = batch
        # Small random shifts (up to 2 pixels) make the classifier less brittle on samples.
        dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
        images = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
        return torch.nn.functional.cross_entropy(m(images), labels)

    history = fit(model, loss_fn, (train.images, train.labels), steps=tr["steps"], batch_size=tr["batch_size"],
                  lr=tr["lr"], weight_decay=tr["weight_decay"], seed=tr["seed"], progress=False)
    wall = time.time() - t0
    model.eval()
    with torch.no_grad():
        pred = model(test.images.to(dev)).argmax(1).cpu()
    acc = float((pred == test.labels).float().mean())
    extra = {"training": {**tr, "data": train.source, "device": dev.type}, "wall_time_s": round(wall, 1),
             "test_accuracy": round(acc, 4), "test_data": test.source,
             "command": "python -m tools.train_pretrained digit-classifier"}
    hist = History(history.steps, [round(v, 5) for v in history.losses])
    path = save_checkpoint(Path(out) / "digit-classifier.safetensors", model, step=tr["steps"], history=hist,
                           extra=extra)
    print(f"wrote {path.name}: test accuracy {acc:.4f} on {len(test.labels)} digits, {wall:.0f} s")
    _remind_checksums(path)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=["digits-ddpm", "digit-classifier", "classifier"])
    p.add_argument("--steps", type=int, default=12000, help="diffusion: most optimizer steps")
    p.add_argument("--chunk", type=int, default=500, help="diffusion: steps between working checkpoints")
    p.add_argument("--max-minutes", type=float, default=120.0, help="diffusion: wall-clock cap")
    p.add_argument("--resume", action="store_true", help="diffusion: continue from the working checkpoint")
    p.add_argument("--restart", action="store_true",
                   help="diffusion: discard an existing working checkpoint and start again")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=HERE, help="folder for the shipped files")
    p.add_argument("--work", type=Path, default=WORK, help="diffusion: folder for working checkpoints")
    p.add_argument("--snapshots", default="",
                   help="diffusion: comma-separated steps (multiples of --chunk) at which to keep "
                        "a copy of the EMA weights in --work, e.g. 500,1000,2000")
    a = p.parse_args(argv)
    try:
        snapshots = tuple(int(v) for v in a.snapshots.split(",") if v.strip())
    except ValueError:
        p.error(f"--snapshots takes whole step numbers separated by commas, not {a.snapshots!r}")
    if any(v % a.chunk for v in snapshots):
        p.error(f"--snapshots {a.snapshots}: every step must be a multiple of --chunk {a.chunk}, "
                f"since the weights are copied between chunks")
    if a.name == "digits-ddpm":
        if a.resume and a.restart:
            p.error("--resume continues the working checkpoint and --restart discards it: pick one")
        train_ddpm(a.steps, a.chunk, a.max_minutes, a.out, a.work, a.resume, a.threads, snapshots,
                   a.restart)
    else:
        train_classifier(a.out, a.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
