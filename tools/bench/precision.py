"""Does bf16 autocast pay in :func:`unet_edu.train.fit`, and does it train as well as float32?

``python -m tools.bench.precision`` trains two diffusion U-Nets on the digits with ``fit``,
once in float32 and once with ``precision="bf16"``, for a few seeds each:

* **matched**: the benchmark's ``mnist28`` network with 8 attention heads (the architecture of
  diffusers' MNIST ``UNet2DModel``), the model the speed goal is stated for;
* **book**: the shipped ``digits-ddpm`` network (the size the chapters train).

It reports images per second through ``fit`` (median step time after warm-up) and the final
loss (mean of the last fifth of the steps) as mean +- sd over the seeds.  "bf16 trains as
well" is then a verdict of :func:`unet_edu.claims.compare` on the seed-by-seed ratio of final
losses (the same seed gives both precisions the same weights, batches and noise): *equivalent
within ±1%* (``MARGIN``, fixed with the study: smaller than the spread between seeds in its
tables), *apart*, or *not resolved*.  The appendix "How fast is it?" shows the
table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from unet_edu.claims import compare
from unet_edu.data import mnist
from unet_edu.diffusion import NoiseSchedule, diffusion_loss
from unet_edu.models import DiffusionUNet, count_parameters
from unet_edu.pretrained import load
from unet_edu.train import fit

from .. import _cli
from .configs import CONFIGS

__all__ = ["MODELS", "run", "markdown_table", "main"]

PRECISIONS = ("fp32", "bf16")
MARGIN = 0.01  # bf16's final loss within ±1% of float32's counts as "trains as well"


def _matched() -> DiffusionUNet:
    return DiffusionUNet(**CONFIGS["mnist28"]["ours_heads8"])


def _book() -> DiffusionUNet:
    return DiffusionUNet(**load("digits-ddpm").model.config)


MODELS = {"matched": ("mnist28 network, 8 heads (diffusers' MNIST layout)", _matched),
          "book": ("the shipped digits-ddpm network", _book)}


def _train(build, precision: str, seed: int, steps: int, batch: int, lr: float,
           images: torch.Tensor, labels: torch.Tensor) -> dict:
    torch.manual_seed(seed)
    model = build()
    schedule = NoiseSchedule("cosine", model.config["num_timesteps"])
    conditional = model.config.get("num_classes")

    def loss_fn(net, data, gen):
        x, y = data
        return diffusion_loss(net, schedule, x * 2 - 1, y if conditional else None, generator=gen)

    stamps = []
    history = fit(model, loss_fn, (images, labels), steps=steps, batch_size=batch, lr=lr,
                  seed=seed, precision=precision, progress=False,
                  callback=lambda step, loss: stamps.append(time.perf_counter()))
    step_s = statistics.median(b - a for a, b in zip(stamps[4:], stamps[5:]))
    tail = history.losses[-max(1, steps // 5):]
    return {"seed": seed, "images_per_s": batch / step_s, "final_loss": sum(tail) / len(tail),
            "parameters": count_parameters(model)}


def run(models=("matched", "book"), seeds=(0, 1), steps: int = 200, batch: int = 64,
        lr: float = 5e-4, log=print) -> dict:
    """Train every model in both precisions for every seed; return a JSON-friendly dict."""
    data = mnist("train")
    results = {"meta": {"machine": _cli.machine(), "torch": torch.__version__,
                        "torch_threads": torch.get_num_threads(), "steps": steps,
                        "batch": batch, "lr": lr, "data": data.source,
                        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
               "models": {}}
    for name in models:
        title, build = MODELS[name]
        runs = {p: [] for p in PRECISIONS}
        for seed in seeds:
            for precision in PRECISIONS:  # alternate, so a slow moment hits both alike
                r = _train(build, precision, seed, steps, batch, lr, data.images, data.labels)
                log(f"{name} {precision} seed {seed}: {r['images_per_s']:.1f} images/s, "
                    f"final loss {r['final_loss']:.4f}")
                runs[precision].append(r)
        results["models"][name] = {"title": title, "runs": runs}
    return results


def _mean_sd(values) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summary(results: dict) -> dict:
    """Per model: speed-up of bf16, and each precision's final loss as (mean, sd)."""
    out = {}
    for name, res in results["models"].items():
        speed = {p: statistics.median(r["images_per_s"] for r in res["runs"][p])
                 for p in PRECISIONS}
        loss = {p: _mean_sd([r["final_loss"] for r in res["runs"][p]]) for p in PRECISIONS}
        # Same seed, same batches and noise: the paired difference isolates the precision.
        paired = _mean_sd([b["final_loss"] - f["final_loss"]
                           for f, b in zip(res["runs"]["fp32"], res["runs"]["bf16"])])
        final = {p: [[r["final_loss"]] for r in res["runs"][p]] for p in PRECISIONS}
        verdict = (compare(final["fp32"], final["bf16"], margin=MARGIN, relative=True)
                   if len(final["fp32"]) > 1 else None)
        out[name] = {"speedup": speed["bf16"] / speed["fp32"], "images_per_s": speed,
                     "loss": loss, "paired_difference": paired, "comparison": verdict}
    return out


def markdown_table(results: dict) -> str:
    meta = results["meta"]
    lines = [f"Measured on {meta['date']}: {meta['machine']['cpu']}, {meta['torch_threads']} "
             f"torch threads, torch {meta['torch']}. Each run: `fit` for {meta['steps']} steps "
             f"of batch {meta['batch']}, lr {meta['lr']:g}, on {meta['data']}; final "
             f"loss = mean of the last fifth of the steps.", "",
             "| network | precision | seeds | images/s through `fit` | bf16 speed-up "
             "| final loss, mean ± sd |", "|---|---|---:|---:|---:|---:|"]
    verdicts = []
    for name, s in summary(results).items():
        res = results["models"][name]
        for p in PRECISIONS:
            mean, sd = s["loss"][p]
            lines.append(f"| {res['title']} | {p} | {len(res['runs'][p])} | "
                         f"{s['images_per_s'][p]:.1f} | "
                         f"{'' if p == 'fp32' else format(s['speedup'], '.2f')} | "
                         f"{mean:.4f} ± {sd:.4f} |")
        d_mean, d_sd = s["paired_difference"]
        c = s["comparison"]
        verdicts.append(
            f"* {res['title']}: bf16 minus fp32 final loss, seed by seed, "
            f"{d_mean:+.5f} ± {d_sd:.5f}; bf16/fp32 "
            + (f"{c.describe(4).replace(' x 1 items', '')}." if c else
               "needs at least 2 seeds for a verdict."))
    return "\n".join(lines + [""] + verdicts) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m tools.bench.precision",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="matched,book")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    _cli.add_report_arguments(p, measuring="train", figure="figure (not drawn)")
    args = p.parse_args(argv)
    if args.plot:
        p.error("--plot: this study has a table, not a figure; use --markdown")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        p.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    seeds = tuple(int(s) for s in args.seeds.split(","))

    def measure():
        return run(models, seeds, args.steps, args.batch, args.lr)

    return _cli.measure_and_report(args, argv, "tools.bench.precision", measure, markdown_table,
                                   None)


if __name__ == "__main__":
    main()
