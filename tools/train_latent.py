"""Train chapter 7's shipped models: ``python -m tools.train_latent vae|ldm|studies``.

``vae`` trains the :class:`~unet_edu.latent.DigitAutoencoder` on the 4,000 bundled training
digits (``unet_edu.data.mnist("train", source="bundled")``) and writes
``digits-vae.safetensors``; its record holds the latent scale factor (computed as latent
diffusion computed Stable Diffusion's 0.18215), the latent statistics and the reconstruction
error on the 1,000 bundled test digits.

``ldm`` trains the :class:`~unet_edu.models.TextConditionedUNet` on those digits' latents and
their measured captions (:mod:`unet_edu.captions`), with caption dropout for classifier-free
guidance and an EMA of the weights, and writes ``digits-ldm.safetensors`` (EMA weights only).
It needs ``digits-vae.safetensors`` in ``--out`` first.  Every ``--eval-every`` steps it draws
500 digits from the EMA weights with the bare class words as prompts and records their
Fréchet distance to the test digits (:mod:`unet_edu.metrics`), so the record shows whether
the samples had stopped improving.

``studies`` then samples the trained pair once for what chapter 7 reports (prompts that vary
one attribute at a time at several guidance scales, and the Fréchet distance at several step
counts: :func:`unet_edu.latent_diffusion.measure_studies`) and writes
``digits-ldm-studies.json``, which the chapter reads instead of sampling for minutes.

``vae`` and ``ldm`` train in chunks of ``--chunk`` steps, keep one working checkpoint (weights, EMA,
optimizer, random state) under ``--work`` (default ``.work/latent``, outside the package),
and continue from it with ``--resume`` (without it, an existing working checkpoint stops the
command; ``--restart`` discards it).  A finished file is never overwritten: delete it, or pass
``--force``, to train it again; a run cut short by ``--max-minutes`` writes no shipped file
(continue it with ``--resume``).  A new shipped file changes its checksum: refresh the manifest
with ``python -m tools.checksums`` afterwards.  The shipped loss history is thinned to at most
2,000 points (means over equal blocks of steps).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from tools.train_pretrained import (TrainingState, _ema_update, _read_log, _remind_checksums,
                                    _write_log)

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "unet_edu" / "pretrained"
WORK = ROOT / ".work" / "latent"

VAE_CONFIG = dict(latent_channels=4, channels=(16, 32, 32), norm_groups=8)
VAE_TRAINING = dict(steps=5000, batch_size=64, lr=2e-3, lr_drop_at=0.75, kl_weight=1e-6, seed=0,
                    grad_clip=1.0)

# The TextConditionedUNet (besides vocab_size, from the tokenizer, and num_timesteps, from
# the training): a text encoder of 2 layers and 32-wide vectors, and a U-Net of widths 32/32 on
# the 8 x 8 latent with a transformer block (self-attention, cross-attention to the caption,
# feed-forward) at both levels and in the middle.
LDM_CONFIG = dict(max_length=8, text_width=32, text_layers=2, text_heads=4, in_channels=4,
                  out_channels=4, base_channels=16, channel_mult=(2, 2), num_res_blocks=1,
                  attention_levels=(0, 1), num_heads=4, norm_groups=8, transformer_depth=1)
LDM_TRAINING = dict(steps=20000, batch_size=128, lr=1e-3, lr_drop_at=0.75, schedule="cosine",
                    num_timesteps=1000, p_uncond=0.1, p_word=0.7, ema_decay=0.999, seed=0,
                    grad_clip=1.0)
EVAL = dict(n=500, steps=20, guidance_scale=3.0, seed=2)
HISTORY_POINTS = 2000


def thin_history(history, points: int = HISTORY_POINTS):
    """The loss history as at most ``points`` means over equal blocks of steps (each labelled
    with its last step), rounded to 5 digits: one shipped copy of a long run stays small."""
    from unet_edu.train import History

    n = len(history.losses)
    block = max(1, -(-n // points))
    steps, losses = [], []
    for i in range(0, n, block):
        chunk = history.losses[i:i + block]
        steps.append(history.steps[min(i + block, n) - 1])
        losses.append(round(sum(chunk) / len(chunk), 5))
    return History(steps, losses), block


def _refuse_overwrite(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise SystemExit(f"{path} exists: a finished run is never overwritten. Delete it or pass "
                         f"--force to train it again")


def _stop_if_unfinished(name: str, done: int, steps: int, log: dict) -> None:
    """A run cut short by --max-minutes writes no shipped file: a model trained for fewer steps
    than its budget is not the finished model, and its file would block the real one."""
    if done < steps:
        raise SystemExit(f"{name} stopped at step {done} of {steps} after "
                         f"{log['elapsed_s'] / 60:.0f} min (--max-minutes); its working "
                         f"checkpoint is kept: continue with the same command and --resume")


def _machine(log: dict) -> dict:
    """Where a run's wall time was measured: the CPU count and the load when it finished (wall
    time on a busy machine says little; ``cpu_time_s`` says more)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    busy = log["cpu_s"] / max(log["elapsed_s"], 1e-9)
    return {"cpu_count": os.cpu_count(), "load_average_1_5_15_min": [round(v, 2) for v in load],
            "torch": torch.__version__, "cpu_s_per_wall_s": round(busy, 3)}


def _train_in_chunks(state, loss_fn, data, tr, steps, chunk, work: Path, name: str, resume: bool,
                     max_minutes: float, after_step=None, after_chunk=None, restart: bool = False):
    """fit() in chunks with one resumable working checkpoint; returns (history, done, log).

    Without ``resume`` an existing working checkpoint is not thrown away silently: the command
    stops and says so, unless ``restart`` discards it deliberately.
    """
    from unet_edu.train import History, fit, read_checkpoint_info, sidecar_path

    work.mkdir(parents=True, exist_ok=True)
    state_path = work / f"{name}-state.safetensors"
    log_path = work / f"{name}-log.json"
    log = {"elapsed_s": 0.0, "cpu_s": 0.0}
    history, done = History(), 0
    if resume and state_path.exists():
        info = read_checkpoint_info(state_path)
        history, done = info.history, info.step
        log = {"cpu_s": 0.0, **_read_log(log_path)}
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
    wall0, cpu0 = time.time() - log["elapsed_s"], time.process_time() - log["cpu_s"]
    while done < steps:
        target = min(steps, (done // chunk + 1) * chunk)
        history = fit(state, loss_fn, data, steps=target, batch_size=tr["batch_size"],
                      lr=tr["lr"], grad_clip=tr["grad_clip"], seed=tr["seed"],
                      checkpoint=state_path, resume=True, progress=False, callback=after_step,
                      lr_drop_at=None)
        done = target
        log["elapsed_s"], log["cpu_s"] = time.time() - wall0, time.process_time() - cpu0
        if after_chunk is not None:
            after_chunk(done, log)
        _write_log(log_path, log)
        recent = history.losses[-chunk:]
        print(f"{name} step {done}: mean loss over the last {len(recent)} steps "
              f"{sum(recent) / len(recent):.5f}, {log['elapsed_s'] / 60:.1f} min "
              f"({log['cpu_s'] / 60:.1f} CPU min)", flush=True)
        if log["elapsed_s"] > max_minutes * 60:
            break
    return history, done, log


def train_vae(steps: int | None = None, chunk: int = 1000, out: Path = HERE, work: Path = WORK,
              resume: bool = False, threads: int | None = None, force: bool = False,
              max_minutes: float = 120.0, restart: bool = False) -> Path:
    from unet_edu.data import mnist
    from unet_edu.latent import (DigitAutoencoder, latent_scale_factor, latent_statistics,
                                 reconstruction_error, vae_loss)
    from unet_edu.pretrained.experiments import converged
    from unet_edu.runtime import device, seed_everything
    from unet_edu.train import save_checkpoint

    if threads:
        torch.set_num_threads(threads)
    tr = {**VAE_TRAINING, **({"steps": steps} if steps else {})}
    target = Path(out) / "digits-vae.safetensors"
    _refuse_overwrite(target, force)
    seed_everything(tr["seed"])
    dev = device()
    train, test = mnist("train", source="bundled"), mnist("test", source="bundled")
    x, x_test = train.images * 2 - 1, test.images * 2 - 1
    model = DigitAutoencoder(**VAE_CONFIG).to(dev)
    state = model  # no EMA: the autoencoder is used as trained

    def loss_fn(m, batch, gen):
        return vae_loss(m, batch[0], gen, tr["kl_weight"])

    history, done, log = _train_chunks_with_drop(state, loss_fn, (x,), tr, tr["steps"], chunk,
                                                 work, "digits-vae", resume, max_minutes,
                                                 restart=restart)
    _stop_if_unfinished("digits-vae", done, tr["steps"], log)
    model.eval()
    gen = torch.Generator().manual_seed(tr["seed"])
    scale = latent_scale_factor(model, x, gen)
    stats = latent_statistics(model, x, torch.Generator().manual_seed(tr["seed"]))
    err = reconstruction_error(model, x_test)
    err_train = reconstruction_error(model, x)
    ok, fall = converged(history)
    hist, block = thin_history(history)
    extra = {
        "training": {**tr, "steps": done, "data": train.source, "data_range": [-1, 1],
                     "device": dev.type, "threads": torch.get_num_threads()},
        "scale_factor": round(scale, 6),
        "scale_factor_note": "1 / std of posterior samples of the 4,000 training latents "
                             "(latent diffusion's scale_by_std)",
        "latent_shape": list(model.latent_shape),
        "latent_statistics": {k: (round(v, 5) if isinstance(v, float) else v)
                              for k, v in stats.items()},
        "reconstruction_test": {k: round(err[k], 5) for k in ("l1", "rmse", "psnr")},
        "reconstruction_train": {k: round(err_train[k], 5) for k in ("l1", "rmse", "psnr")},
        "test_data": test.source,
        "converged": ok, "fall_over_last_fifth": round(fall, 4),
        "history_block": block,
        "wall_time_s": round(log["elapsed_s"], 1), "cpu_time_s": round(log["cpu_s"], 1),
        "machine": _machine(log),
        "command": f"python -m tools.train_latent vae --steps {done}"
                   + (f" --threads {threads}" if threads else ""),
    }
    _refuse_overwrite(target, force)  # again: another run may have finished meanwhile
    path = save_checkpoint(target, model, step=done, history=hist, extra=extra)
    _remind_checksums(path)
    print(f"wrote {path.name}: {done} steps, {log['elapsed_s'] / 60:.1f} min, scale factor "
          f"{scale:.4f}, test L1 {err['l1']:.4f} (PSNR {err['psnr']:.1f} dB), converged {ok} "
          f"(loss fell {fall:.1%} over the last fifth)")
    return path


def _train_chunks_with_drop(state, loss_fn, data, tr, steps, chunk, work, name, resume,
                            max_minutes, after_step=None, after_chunk=None, restart=False):
    """:func:`_train_in_chunks` with the learning rate divided by 10 from ``lr_drop_at``.

    A chunk boundary is placed at the drop, so each chunk trains at one rate.
    """
    drop = int(tr["lr_drop_at"] * steps)
    history = done = log = None
    for stop, lr in ((drop, tr["lr"]), (steps, tr["lr"] / 10)):
        history, done, log = _train_in_chunks(state, loss_fn, data, {**tr, "lr": lr}, stop, chunk,
                                              work, name, resume, max_minutes, after_step,
                                              after_chunk, restart)
        resume, restart = True, False
        if done < stop:  # stopped by --max-minutes
            break
    return history, done, log


def _real_features(classifier):
    from unet_edu.data import mnist
    from unet_edu.metrics import classifier_features

    return classifier_features(classifier, mnist("test", source="bundled").images)[0]


def train_ldm(steps: int | None = None, chunk: int = 1000, out: Path = HERE, work: Path = WORK,
              resume: bool = False, threads: int | None = None, force: bool = False,
              max_minutes: float = 240.0, eval_every: int = 2000, restart: bool = False) -> Path:
    from unet_edu import captions as cap
    from unet_edu.data import mnist
    from unet_edu.diffusion import NoiseSchedule
    from unet_edu.latent import DigitAutoencoder, encode_dataset, latent_range
    from unet_edu.latent_diffusion import (LatentDiffusion, caption_training_loss,
                                           latent_sampler_score)
    from unet_edu.models import TextConditionedUNet
    from unet_edu.pretrained import load
    from unet_edu.pretrained.experiments import converged
    from unet_edu.runtime import device, seed_everything
    from unet_edu.train import load_checkpoint, save_checkpoint

    if threads:
        torch.set_num_threads(threads)
    tr = {**LDM_TRAINING, **({"steps": steps} if steps else {})}
    target = Path(out) / "digits-ldm.safetensors"
    _refuse_overwrite(target, force)
    vae_path = Path(out) / "digits-vae.safetensors"
    if not vae_path.exists():
        raise SystemExit(f"{vae_path} is missing: train the autoencoder first with "
                         f"python -m tools.train_latent vae")
    seed_everything(tr["seed"])
    dev = device()
    vae, vae_info = load_checkpoint(vae_path, model_class=DigitAutoencoder)
    vae = vae.to(dev).eval()
    scale = float(vae_info.extra["scale_factor"])
    train = mnist("train", source="bundled")
    mean, std = encode_dataset(vae, train.images * 2 - 1)
    bounds = latent_range(vae, train.images * 2 - 1, scale)  # the sampler clips to it
    thresholds = cap.fit_thresholds(train.images, train.labels)
    bins = cap.attribute_bins(cap.measure(train.images), train.labels, thresholds)
    tokenizer = cap.tokenizer()
    model = TextConditionedUNet(len(tokenizer), **LDM_CONFIG,
                                num_timesteps=tr["num_timesteps"])
    state = TrainingState(model).to(dev)
    schedule = NoiseSchedule(tr["schedule"], tr["num_timesteps"])
    loss_fn_inner = caption_training_loss(schedule, scale, tr["p_uncond"], tr["p_word"])

    def loss_fn(s, batch, gen):
        return loss_fn_inner(s.model, batch, gen)

    def after_step(step, loss):
        _ema_update(state.ema, state.model, min(tr["ema_decay"], (1 + step) / (10 + step)))

    classifier = load("digit-classifier", device=dev).model
    real = _real_features(classifier)
    fd_path = work / "digits-ldm-fd.json"
    fd_history = json.loads(fd_path.read_text()) if resume and fd_path.exists() else []

    def after_chunk(done, log):
        if done % eval_every and done != tr["steps"]:
            return
        if any(row["step"] == done for row in fd_history):
            return
        pipe = LatentDiffusion(vae, state.ema, schedule, scale, thresholds, tokenizer,
                               latent_range=bounds)
        t0 = time.time()
        score = latent_sampler_score(pipe, classifier, real, n=EVAL["n"], steps=EVAL["steps"],
                                     guidance_scale=EVAL["guidance_scale"], seed=EVAL["seed"])
        fd_history.append({"step": done, "fd": round(score.fd, 3), "fd_sd": round(score.fd_sd, 3),
                           "label_accuracy": round(score.label_accuracy, 4),
                           "seconds": round(time.time() - t0, 1)})
        fd_path.write_text(json.dumps(fd_history))
        print(f"  EMA samples at step {done}: FD {score.fd:.2f} +- {score.fd_sd:.2f}, label "
              f"accuracy {score.label_accuracy:.3f}", flush=True)

    data = (mean, std, train.labels, bins)
    history, done, log = _train_chunks_with_drop(state, loss_fn, data, tr, tr["steps"], chunk,
                                                 work, "digits-ldm", resume, max_minutes,
                                                 after_step, after_chunk, restart)
    _stop_if_unfinished("digits-ldm", done, tr["steps"], log)
    ok, fall = converged(history)
    last = fd_history[-2:]
    fd_settled = (len(last) == 2 and
                  abs(last[1]["fd"] - last[0]["fd"]) <= 2 * max(last[0]["fd_sd"], last[1]["fd_sd"]))
    hist, block = thin_history(history)
    final = history.losses[-500:]
    extra = {
        "training": {**tr, "steps": done, "data": train.source, "scale_factor": scale,
                     "caption_thresholds": thresholds.to_dict(),
                     "vocabulary": tokenizer.vocabulary, "autoencoder": vae_path.name,
                     "weights": "EMA of the trained weights", "device": dev.type,
                     "latent_range": [[round(v, 5) for v in row]
                                      for row in bounds.tolist()],
                     "threads": torch.get_num_threads()},
        "final_loss": round(sum(final) / len(final), 5),
        "final_loss_note": "mean training loss over the last 500 steps",
        "converged": ok, "fall_over_last_fifth": round(fall, 4),
        "fd_history": fd_history, "fd_eval": EVAL,
        "fd_settled": fd_settled,
        "fd_settled_note": "the last two evaluations differ by at most twice the larger "
                           "bootstrap spread",
        "history_block": block,
        "wall_time_s": round(log["elapsed_s"], 1), "cpu_time_s": round(log["cpu_s"], 1),
        "wall_time_note": "training steps and the FD evaluations between chunks",
        "machine": _machine(log),
        "command": f"python -m tools.train_latent ldm --steps {done}"
                   + (f" --threads {threads}" if threads else ""),
    }
    _refuse_overwrite(target, force)  # again: another run may have finished meanwhile
    path = save_checkpoint(target, state.ema, step=done, history=hist, extra=extra)
    _remind_checksums(path)
    print(f"wrote {path.name}: {done} steps, {log['elapsed_s'] / 60:.1f} min, final loss "
          f"{extra['final_loss']}, converged {ok} (loss fell {fall:.1%} over the last fifth), "
          f"FD settled {fd_settled}")
    return path


STUDIES = dict(n=200, guidance_scales=(1.0, 3.0, 5.0), steps=20, seed=0, fd_steps=(10, 20, 50),
               fd_n=500, fd_guidance=3.0)


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON atomically: a crash leaves no half-written file behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


def write_studies(pipe, classifier, target: Path, force: bool = False, **settings) -> Path:
    """Run :func:`unet_edu.latent_diffusion.measure_studies` on ``pipe`` and store the result
    (with its settings, the model's step and the time it took) at ``target``."""
    from unet_edu.latent_diffusion import measure_studies

    _refuse_overwrite(target, force)
    wall0, cpu0 = time.time(), time.process_time()
    data = measure_studies(pipe, classifier, _real_features(classifier),
                           **{**STUDIES, **settings})
    log = {"elapsed_s": time.time() - wall0, "cpu_s": time.process_time() - cpu0}
    data["record"] = {"wall_time_s": round(log["elapsed_s"], 1),
                      "cpu_time_s": round(log["cpu_s"], 1), "machine": _machine(log),
                      "threads": torch.get_num_threads(),
                      "command": "python -m tools.train_latent studies"}
    _refuse_overwrite(target, force)
    _write_json(target, data)
    return target


def run_studies(out: Path = HERE, threads: int | None = None, force: bool = False) -> Path:
    """Measure the trained pair in ``out`` once, for chapter 7 (``digits-ldm-studies.json``)."""
    from unet_edu.diffusion import NoiseSchedule
    from unet_edu.latent import DigitAutoencoder
    from unet_edu.latent_diffusion import STUDIES_FILE, LatentDiffusion
    from unet_edu.models import TextConditionedUNet
    from unet_edu.pretrained import load
    from unet_edu.runtime import device
    from unet_edu.train import load_checkpoint

    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    target = out / STUDIES_FILE
    _refuse_overwrite(target, force)
    paths = [out / "digits-vae.safetensors", out / "digits-ldm.safetensors"]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"{', '.join(missing)} missing in {out}: train them first with "
                         f"python -m tools.train_latent vae, then ... ldm")
    dev = device()
    vae, _ = load_checkpoint(paths[0], model_class=DigitAutoencoder)
    ldm, info = load_checkpoint(paths[1], model_class=TextConditionedUNet)
    tr = info.extra["training"]
    pipe = LatentDiffusion.from_trained(vae.to(dev).eval(), ldm.to(dev).eval(),
                                        NoiseSchedule(tr["schedule"], tr["num_timesteps"]), tr)
    classifier = load("digit-classifier", device=dev).model
    path = write_studies(pipe, classifier, target, force)
    _remind_checksums(path)
    print(f"wrote {path.name} ({path.stat().st_size / 1e3:.0f} kB)")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=["vae", "ldm", "studies"],
                   help="vae, then ldm, then studies (the measurements chapter 7 shows)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"optimizer steps (default: vae {VAE_TRAINING['steps']}, "
                        f"ldm {LDM_TRAINING['steps']})")
    p.add_argument("--chunk", type=int, default=1000, help="steps between working checkpoints")
    p.add_argument("--eval-every", type=int, default=2000,
                   help="ldm: steps between FD evaluations (a multiple of --chunk)")
    p.add_argument("--max-minutes", type=float, default=240.0, help="wall-clock cap")
    p.add_argument("--resume", action="store_true", help="continue from the working checkpoint")
    p.add_argument("--restart", action="store_true",
                   help="discard an existing working checkpoint and start again")
    p.add_argument("--force", action="store_true", help="replace a finished shipped file")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=HERE, help="folder of the shipped files")
    p.add_argument("--work", type=Path, default=WORK, help="folder for working checkpoints")
    a = p.parse_args(argv)
    if a.eval_every % a.chunk:
        p.error(f"--eval-every {a.eval_every} must be a multiple of --chunk {a.chunk}: samples "
                f"are drawn between chunks")
    if a.resume and a.restart:
        p.error("--resume continues the working checkpoint and --restart discards it: pass one")
    if a.name == "studies":
        run_studies(a.out, a.threads, a.force)
    elif a.name == "vae":
        train_vae(a.steps, a.chunk, a.out, a.work, a.resume, a.threads, a.force, a.max_minutes,
                  a.restart)
    else:
        train_ldm(a.steps, a.chunk, a.out, a.work, a.resume, a.threads, a.force, a.max_minutes,
                  a.eval_every, a.restart)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
