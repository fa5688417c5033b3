"""Train the runs behind a chapter's experiment: ``python -m tools.train_experiments NAME``.

``NAME`` is one of :data:`unet_edu.pretrained.experiments.EXPERIMENTS` (``--list`` prints
them).  Every (variant, seed) run is trained at the experiment's publication budget and saved
as ``unet_edu/pretrained/runs/NAME/<variant>--seed<s>.safetensors`` with its loss
history and training record, atomically.  A run whose file already exists is skipped, so an
interrupted job continues where it stopped when started again (``--force`` retrains).  Runs
go one at a time: two trainings side by side on a small machine only slow each other down.

Each run's record says whether it converged (training loss over the last fifth of the run
fell by less than 5%); the command ends with a table of all runs and exits with status 1 if
any did not.
"""

from __future__ import annotations

import argparse
import sys

import torch

from unet_edu.pretrained.experiments import (EXPERIMENTS, run_path, save_run, train_run)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.train_experiments",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", help="the experiment to train")
    p.add_argument("--list", action="store_true", help="list the experiments and stop")
    p.add_argument("--force", action="store_true", help="retrain runs that are already saved")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default=None, help="write under this folder instead of the package")
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds to train now (default: all of the experiment's)")
    args = p.parse_args(argv)
    if args.list or not args.name:
        for e in EXPERIMENTS.values():
            print(f"{e.name}: {len(e.variants)} variants x {len(e.seeds)} seeds, {e.steps} "
                  f"steps of batch {e.batch_size}; {e.note}")
        return 0
    if args.name not in EXPERIMENTS:
        p.error(f"unknown experiment {args.name!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    if args.threads:
        torch.set_num_threads(args.threads)
    exp = EXPERIMENTS[args.name]
    seeds = exp.seeds
    if args.seeds:
        try:
            seeds = tuple(int(v) for v in args.seeds.split(","))
        except ValueError:
            p.error(f"--seeds takes whole numbers separated by commas, e.g. 0,1; got {args.seeds!r}")
    rows = []
    for seed in seeds:
        for variant in exp.variants:
            path = run_path(exp.name, variant, seed)
            if args.out is None and path.exists() and not args.force:
                print(f"{variant}, seed {seed}: already saved ({path.name}), skipped", flush=True)
                continue
            run = train_run(exp, variant, seed)
            saved = save_run(run, root=args.out)
            r = run.record
            rows.append((variant, seed, r["wall_time_s"], r["converged"], r["fall_over_last_fifth"]))
            print(f"{variant}, seed {seed}: {r['wall_time_s']:.0f} s, loss fell "
                  f"{r['fall_over_last_fifth']:.1%} over the last fifth "
                  f"({'converged' if r['converged'] else 'NOT converged'}) -> {saved}", flush=True)
    for variant, seed, secs, ok, fall in rows:
        print(f"{variant:12s} seed {seed}  {secs:7.0f} s  fall {fall:6.1%}  "
              f"{'converged' if ok else 'NOT converged'}")
    return 0 if all(ok for *_, ok, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
