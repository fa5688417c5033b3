"""Sample and score the snapshots of the shipped diffusion model's training.

``python -m tools.ddpm_snapshots --work DIR`` reads the EMA weights that
``python -m tools.train_pretrained digits-ddpm --snapshots 500,1000,... --work DIR`` kept
(``digits-ddpm-stepNNNNN.safetensors``), and for each one

* draws a grid of 20 digits (two per class) with DDIM from the same starting noise, and
* scores 500 samples with :func:`unet_edu.metrics.evaluate_sampler`, with the same settings as
  the DDIM-20 row of the stored sampler sweep, so that the last snapshot's score can be
  compared with that row.

It refuses to write unless the last snapshot *is* the shipped model (same step, identical
weights): the pictures are meant to show how the shipped model came to be.  The result goes
to ``unet_edu/pretrained/digits-ddpm-snapshots.safetensors`` (see
:mod:`unet_edu.pretrained.snapshots`), atomically; refresh the checksum manifest afterwards
with ``python -m tools.checksums``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from pathlib import Path

import torch

from tools import _cli
from unet_edu.pretrained.snapshots import SHIPPED

GRID = dict(n=20, steps=20, guidance_scale=2.0, seed=0)  # the pictures
SCORE = dict(n=500, steps=20, guidance_scale=2.0, seed=2, spacing="trailing")  # the sweep's


def snapshot_files(work: Path) -> list[Path]:
    files = sorted(Path(work).glob("digits-ddpm-step*.safetensors"))
    if not files:
        raise SystemExit(f"no digits-ddpm-step*.safetensors in {work}; train with "
                         f"python -m tools.train_pretrained digits-ddpm --snapshots 500,1000,... "
                         f"--work {work}")
    return files


def main(argv=None) -> int:
    from safetensors.torch import save_file

    from unet_edu import pretrained
    from unet_edu._safe_write import _atomic_write
    from unet_edu.checkpoints import load_checkpoint
    from unet_edu.data import mnist
    from unet_edu.diffusion import ddim_sample
    from unet_edu.metrics import classifier_features, evaluate_sampler

    p = argparse.ArgumentParser(prog="python -m tools.ddpm_snapshots",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder holding the snapshots")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=SHIPPED, help="file to write")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    shipped = pretrained.load("digits-ddpm", device="cpu")
    files = snapshot_files(a.work)
    last, info_last = load_checkpoint(files[-1])
    same = info_last.step == shipped.info.step and all(
        torch.equal(x, y) for x, y in zip(last.state_dict().values(),
                                          shipped.model.state_dict().values()))
    if not same:
        raise SystemExit(f"the last snapshot ({files[-1].name}, step {info_last.step}) is not the "
                         f"shipped model (step {shipped.info.step}): these snapshots come from "
                         f"another run; retrain with the shipped command and --snapshots")
    classifier = pretrained.load("digit-classifier", device="cpu").model
    test = mnist("test")
    half = len(test.labels) // 2
    real = classifier_features(classifier, test.images)[0][half:half + SCORE["n"]]
    losses = shipped.info.history.losses
    rows, grids = [], []
    for path in files:
        model, info = load_checkpoint(path)
        model.eval()
        g = torch.Generator().manual_seed(GRID["seed"])
        x = ddim_sample(model, shipped.schedule, (GRID["n"], 1, 28, 28), steps=GRID["steps"],
                        y=torch.arange(GRID["n"]) % 10, guidance_scale=GRID["guidance_scale"],
                        generator=g, progress=False).x
        grids.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0])
        score = evaluate_sampler(model, shipped.schedule, classifier, real, sampler="ddim",
                                 **SCORE)
        recent = losses[max(0, info.step - 500):info.step]
        rows.append({"step": info.step, "fd": score.fd, "fd_sd": score.fd_sd,
                     "label_accuracy": score.label_accuracy,
                     "loss": sum(recent) / len(recent)})
        print(f"step {info.step}: FD {score.fd:.2f} ± {score.fd_sd:.2f}, label accuracy "
              f"{score.label_accuracy:.3f}, loss {rows[-1]['loss']:.4f}", flush=True)
    meta = {"date": _dt.date.today().isoformat(), "machine": _cli.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "grid": GRID, "score": SCORE, "real_source": test.source,
            "loss_note": "mean training loss over the 500 steps before the snapshot",
            "weights": "EMA weights of the run that produced digits-ddpm.safetensors; "
                       "the last snapshot is identical to the shipped model",
            "command": "python -m tools.ddpm_snapshots --work WORK"
                       + (f" --threads {a.threads}" if a.threads else "")}
    record = json.dumps({"meta": meta, "rows": rows})
    images = torch.stack(grids).contiguous()
    _atomic_write(a.out, lambda tmp: save_file({"images": images}, str(tmp),
                                               metadata={"record": record}))
    print(f"wrote {a.out} ({len(rows)} snapshots)")
    if Path(a.out).resolve().parent == pretrained.HERE.resolve():
        print("the shipped file changed: refresh its checksum with python -m tools.checksums")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
