"""How few sampling steps are enough?  DDIM step counts against sample quality.

``python -m tools.sampler_sweep`` loads the shipped ``digits-ddpm`` model and the digit
classifier, draws the same class-balanced set of digits with 1,000-step DDPM and with DDIM at
several step counts, and scores every set with :func:`unet_edu.metrics.evaluate_sampler`:
Fréchet distance (FD) to real test digits, label accuracy and wall time.  Two disjoint sets of
real digits of the same size give the floor of the FD.

The question it answers: how few DDIM steps keep the FD within ``--factor`` (1.5) times the FD
of 1000-step DDPM?  ``--out``, ``--markdown`` and ``--plot`` write the results file, the table
and the figure; ``--from-json`` re-renders them from a results file without sampling.  The
results for the shipped model are stored next to it (``unet_edu/pretrained/digits-ddpm-sweep.json``,
read by :func:`shipped_results`), so chapter 5 can show them in Colab too; the book's appendix
"How fast is it?" includes the table and the figure.

On two CPU cores the full sweep (500 digits per row, DDPM included) takes about half an hour,
almost all of it in DDPM's 1,000 network calls per batch.
"""

from __future__ import annotations

import argparse
import datetime as _dt

import torch

from tools import _cli
from unet_edu.pretrained.sweep import (SHIPPED, fewest_steps_within, markdown_table, plot_sweep,
                                      shipped_results)

__all__ = ["run_sweep", "fewest_steps_within", "markdown_table", "plot_sweep", "shipped_results",
           "SHIPPED", "main"]


def run_sweep(n: int = 500, ddim_steps=(5, 10, 20, 50, 100), ddpm: bool = True,
              guidance_scale: float = 2.0, seed: int = 2, model=None, schedule=None,
              classifier=None, progress: bool = True) -> dict:
    """Score DDPM and DDIM at each of ``ddim_steps`` on ``n`` samples; return a results dict.

    ``model``, ``schedule`` and ``classifier`` default to the shipped models (tests pass tiny
    ones).  The real reference is the test split of :func:`unet_edu.data.mnist`: its first ``n``
    digits against digits ``half .. half + n`` give the floor, and samples are compared with the
    second set.
    """
    from unet_edu import pretrained
    from unet_edu.data import mnist
    from unet_edu.metrics import classifier_features, evaluate_sampler, frechet_distance
    from unet_edu.runtime import device

    info = None
    if model is None:
        loaded = pretrained.load("digits-ddpm")
        model, schedule, info = loaded.model, loaded.schedule, loaded.info
    if classifier is None:
        classifier = pretrained.load("digit-classifier").model
    test = mnist("test")
    half = len(test.labels) // 2
    if not 2 <= n <= half:
        raise ValueError(f"n={n} samples need two disjoint real sets of n digits, but the test "
                         f"split has {len(test.labels)}; use 2 <= n <= {half}")
    feats, _ = classifier_features(classifier, test.images)
    real_a, real_b = feats[:n], feats[half:half + n]
    runs = ([("ddpm", schedule.num_steps)] if ddpm else []) + [("ddim", s) for s in ddim_steps]
    rows = []
    for sampler, steps in runs:
        score = evaluate_sampler(model, schedule, classifier, real_b, sampler=sampler, steps=steps,
                                 n=n, guidance_scale=guidance_scale, seed=seed, progress=progress)
        rows.append(score.as_dict())
        print(f"{sampler.upper()}-{score.steps}: FD {score.fd:.2f}, label accuracy "
              f"{score.label_accuracy:.3f}, {score.seconds:.1f} s", flush=True)

    meta = {"date": _dt.date.today().isoformat(), "machine": _cli.machine(),
            "device": device().type, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "n": n,
            "guidance_scale": guidance_scale, "seed": seed, "real_source": test.source,
            "real_floor_fd": frechet_distance(real_a, real_b)}
    if info is not None:
        meta["model"] = {"name": "digits-ddpm", "training_steps": info.step,
                         "final_loss": info.extra.get("final_loss")}
    return {"meta": meta, "rows": rows}


def _save_plot(results: dict, path, factor: float) -> None:
    _cli.save_figure(plot_sweep(results, factor=factor).figure, path)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m tools.sampler_sweep",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=500,
                   help="digits per row (at most half the real test split)")
    p.add_argument("--steps", default="5,10,20,50,100", help="comma-separated DDIM step counts")
    p.add_argument("--no-ddpm", action="store_true", help="leave out 1000-step DDPM (the slow row)")
    p.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale")
    p.add_argument("--factor", type=float, default=1.5,
                   help="how close to DDPM's FD counts as close")
    _cli.add_report_arguments(p, measuring="sample")
    args = p.parse_args(argv)
    try:
        steps = tuple(int(s) for s in args.steps.split(",") if s.strip())
    except ValueError:
        p.error(f"--steps must be comma-separated integers such as 5,10,50, got {args.steps!r}")

    def measure():
        return run_sweep(n=args.n, ddim_steps=steps, ddpm=not args.no_ddpm,
                         guidance_scale=args.guidance)

    return _cli.measure_and_report(
        args, argv, "tools.sampler_sweep", measure,
        lambda results: markdown_table(results, args.factor),
        lambda results, path: _save_plot(results, path, args.factor))


if __name__ == "__main__":
    main()
