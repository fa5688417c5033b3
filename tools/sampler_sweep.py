"""How few sampling steps are enough?  DDIM step counts against sample quality.

``python -m tools.sampler_sweep`` loads the shipped ``digits-ddpm`` model and the digit
classifier, draws the same class-balanced set of digits with 1,000-step DDPM and with DDIM at
several step counts, and scores every set with :func:`unet_edu.metrics.evaluate_sampler`:
Fréchet distance (FD) to real test digits, label accuracy and wall time.  Two disjoint sets of
real digits of the same size give the floor of the FD.

The question it answers: how few DDIM steps keep the FD within ``--factor`` (1.5) times the FD
of 1000-step DDPM?  ``--other-spacings`` adds rows that visit other timesteps
(:func:`unet_edu.diffusion.ddim_timesteps`), and ``--guidance 0,1,2,4,8`` sweeps the
guidance scale instead (each row also reports the samples' within-class variety).  Every FD
comes with its bootstrap spread.  ``--out``, ``--markdown`` and ``--plot`` write the results file, the table
and the figure; ``--from-json`` re-renders them from a results file without sampling.  The
results for the shipped model are stored next to it (``digits-ddpm-sweep.json`` and
``digits-ddpm-guidance.json`` in ``unet_edu/pretrained``, read by :func:`shipped_results`), so
chapter 5 can show them in Colab too; the book's appendix "How fast is it?" includes the step
table and its figure.  After rewriting a stored sweep, refresh the checksum manifest with
``python -m tools.checksums``.

On two CPU cores the step sweep (500 digits per row) takes about six minutes without DDPM and
half an hour more with it: DDPM makes 1,000 network calls per batch.  ``--reuse-ddpm`` carries
an earlier DDPM row over when only DDIM's settings changed; ``--reuse`` carries over every row
whose setting is unchanged, so ``--etas 0.5,1`` adds DDIM rows with noise (eta > 0) at
``--eta-steps`` without sampling the rest again.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from pathlib import Path

import torch

from tools import _cli
from unet_edu.diffusion import SPACINGS
from unet_edu.pretrained.sweep import (SHIPPED, SHIPPED_GUIDANCE, fewest_steps_within,
                                      markdown_table, plot_sweep, shipped_results)

__all__ = ["run_sweep", "fewest_steps_within", "markdown_table", "plot_sweep", "shipped_results",
           "SHIPPED", "SHIPPED_GUIDANCE", "main"]


def _runs(ddim_steps, ddpm, guidance_scales, spacing, other_spacings, other_steps, num_steps,
          etas=(), eta_steps=()):
    """(sampler, steps, spacing, guidance, eta) for every row, in table order."""
    runs = []
    for g in guidance_scales:
        runs += [("ddpm", num_steps, None, g, None)] if ddpm else []
        runs += [("ddim", s, spacing, g, 0.0) for s in ddim_steps]
        runs += [("ddim", s, sp, g, 0.0) for sp in other_spacings for s in other_steps]
        runs += [("ddim", s, spacing, g, float(e)) for e in etas if e for s in eta_steps]
    return runs


def _row_key(row: dict) -> tuple:
    from unet_edu.pretrained.sweep import eta_of

    return (row["sampler"], row["steps"], row.get("spacing"), float(row["guidance_scale"]),
            eta_of(row))


def _reusable_rows(path, meta: dict) -> dict:
    """Every row of an earlier results file measured on the same terms, by setting.

    A row can be carried over when the model, the sample count and the seed are the same: the
    samples of a setting are then the same images, so only new settings need sampling.
    """
    old = json.loads(Path(path).read_text())
    m = old["meta"]
    if not (m.get("n") == meta["n"] and m.get("seed") == meta["seed"]
            and m.get("model") == meta.get("model")):
        raise ValueError(f"{path} was sampled with another model, n or seed; run without "
                         f"--reuse to measure every row")
    return {_row_key(r): dict(r, sampled_on=r.get("sampled_on", r.get("reused_from", m["date"])),
                              sampled_on_cpu=r.get("sampled_on_cpu", m["machine"]["cpu"]))
            for r in old["rows"]}


def _reusable_ddpm_row(path, meta: dict, guidance: float) -> dict | None:
    """The DDPM row of an earlier results file, if it was measured on the same terms.

    DDPM visits every timestep, so a change of DDIM's spacing does not change it; its row (half
    an hour on two CPU cores) can be carried over when the model, the sample count, the seed and
    the guidance scale are the same.
    """
    old = json.loads(Path(path).read_text())
    m = old["meta"]
    same = (m.get("n") == meta["n"] and m.get("seed") == meta["seed"]
            and m.get("model") == meta.get("model"))
    rows = [r for r in old["rows"] if r["sampler"] == "ddpm" and r["guidance_scale"] == guidance]
    if not (same and rows):
        raise ValueError(f"{path} has no DDPM row for the same model, n, seed and guidance "
                         f"scale {guidance:g}; run without --reuse-ddpm to measure it")
    # A row reused before keeps the day and the processor it was really sampled on.
    return dict(rows[0], reused_from=rows[0].get("reused_from", m["date"]),
                sampled_on_cpu=rows[0].get("sampled_on_cpu", m["machine"]["cpu"]))


def run_sweep(n: int = 500, ddim_steps=(5, 10, 20, 50, 100), ddpm: bool = True,
              guidance_scales=(2.0,), seed: int = 2, spacing: str = "trailing",
              other_spacings=(), other_steps=(5, 10, 20), etas=(), eta_steps=(10, 20, 50),
              reuse_ddpm=None, reuse=None, model=None, schedule=None, classifier=None,
              progress: bool = True) -> dict:
    """Score DDPM and DDIM on ``n`` samples each; return a results dict.

    One row per guidance scale in ``guidance_scales`` and per sampler: DDPM (unless
    ``ddpm=False``), DDIM at each of ``ddim_steps`` with ``spacing``, DDIM at each of
    ``other_steps`` with each of ``other_spacings``, and DDIM with each nonzero eta of ``etas``
    at each of ``eta_steps``.  ``reuse_ddpm`` names an earlier results file whose DDPM row is
    carried over instead of measured (see :func:`_reusable_ddpm_row`); ``reuse`` one whose
    rows are all carried over where the setting is the same (:func:`_reusable_rows`).

    ``model``, ``schedule`` and ``classifier`` default to the shipped models (tests pass tiny
    ones).  The real reference is the test split of :func:`unet_edu.data.mnist`: its first ``n``
    digits against digits ``half .. half + n`` give the floor, and samples are compared with the
    second set.
    """
    from unet_edu import pretrained
    from unet_edu.data import mnist
    from unet_edu.metrics import (classifier_features, evaluate_sampler, frechet_distance,
                                  frechet_distance_spread, within_class_variety)
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
    guidance_scales = tuple(float(g) for g in guidance_scales)
    meta = {"date": _dt.date.today().isoformat(), "machine": _cli.machine(),
            "device": device().type, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "n": n,
            "guidance_scale": guidance_scales[0], "guidance_scales": list(guidance_scales),
            "spacing": spacing, "seed": seed, "real_source": test.source,
            "real_floor_fd": frechet_distance(real_a, real_b),
            "real_floor_fd_sd": frechet_distance_spread(real_a, real_b),
            "real_variety": within_class_variety(real_b, test.labels[half:half + n])}
    if info is not None:
        meta["model"] = {"name": "digits-ddpm", "training_steps": info.step,
                         "final_loss": info.extra.get("final_loss")}
    rows = []
    earlier = _reusable_rows(reuse, meta) if reuse else {}
    for sampler, steps, sp, g, eta in _runs(ddim_steps, ddpm, guidance_scales, spacing,
                                            other_spacings, other_steps, schedule.num_steps,
                                            etas, eta_steps):
        key = (sampler, steps, sp, g, eta)
        if key in earlier:
            rows.append(earlier[key])
            print(f"{sampler.upper()}-{steps} {sp or ''} guidance {g:g} eta {eta}: reused "
                  f"from {reuse}", flush=True)
            continue
        if sampler == "ddpm" and reuse_ddpm:
            rows.append(_reusable_ddpm_row(reuse_ddpm, meta, g))
            print(f"DDPM, guidance {g:g}: reused from {reuse_ddpm}", flush=True)
            continue
        score = evaluate_sampler(model, schedule, classifier, real_b, sampler=sampler, steps=steps,
                                 n=n, guidance_scale=g, seed=seed, spacing=sp or spacing,
                                 eta=eta or 0.0, progress=progress)
        rows.append(score.as_dict())
        print(f"{sampler.upper()}-{score.steps} {sp or ''} guidance {g:g} eta {eta}: FD "
              f"{score.fd:.2f} ± {score.fd_sd:.2f} (± {score.fd_sd_with_real:.2f} with the real "
              f"set redrawn), label accuracy {score.label_accuracy:.3f}, variety "
              f"{score.variety:.2f}, {score.seconds:.1f} s", flush=True)
    return {"meta": meta, "rows": rows}


def _save_plot(results: dict, path, factor: float) -> None:
    _cli.save_figure(plot_sweep(results, factor=factor).figure, path)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m tools.sampler_sweep",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=500,
                   help="digits per row (at most half the real test split)")
    p.add_argument("--steps", default="5,10,20,50,100", help="comma-separated DDIM step counts")
    p.add_argument("--spacing", default="trailing", choices=SPACINGS,
                   help="which timesteps DDIM visits (unet_edu.diffusion.ddim_timesteps)")
    p.add_argument("--other-spacings", default="",
                   help="comma-separated spacings to compare at --other-steps")
    p.add_argument("--other-steps", default="5,10,20",
                   help="DDIM step counts for --other-spacings")
    p.add_argument("--etas", default="",
                   help="comma-separated nonzero DDIM etas to add at --eta-steps (e.g. 0.5,1)")
    p.add_argument("--eta-steps", default="10,20,50", help="DDIM step counts for --etas")
    p.add_argument("--reuse", default=None, metavar="JSON",
                   help="carry over every row of this earlier results file whose setting is "
                        "the same (same model, n and seed)")
    p.add_argument("--no-ddpm", action="store_true", help="leave out 1000-step DDPM (the slow row)")
    p.add_argument("--reuse-ddpm", default=None, metavar="JSON",
                   help="carry the DDPM row over from this earlier results file")
    p.add_argument("--guidance", default="2",
                   help="classifier-free guidance scale, or several, comma-separated")
    p.add_argument("--factor", type=float, default=1.5,
                   help="how close to DDPM's FD counts as close")
    _cli.add_report_arguments(p, measuring="sample")
    args = p.parse_args(argv)

    def numbers(option, kind):
        text = getattr(args, option.strip("-").replace("-", "_"))
        try:
            return tuple(kind(s) for s in text.split(",") if s.strip())
        except ValueError:
            p.error(f"{option} must be comma-separated numbers such as 5,10,50, got {text!r}")

    steps, other_steps = numbers("--steps", int), numbers("--other-steps", int)
    guidance = numbers("--guidance", float)
    etas, eta_steps = numbers("--etas", float), numbers("--eta-steps", int)
    for e in etas:
        if not 0 < e <= 1:
            p.error(f"--etas: each eta must lie in (0, 1] (eta 0 is the main rows), got {e:g}")
    others = tuple(s.strip() for s in args.other_spacings.split(",") if s.strip())
    for sp in others:
        if sp not in SPACINGS:
            p.error(f"--other-spacings: {sp!r} is not one of {', '.join(SPACINGS)}")

    def measure():
        return run_sweep(n=args.n, ddim_steps=steps, ddpm=not args.no_ddpm,
                         guidance_scales=guidance, spacing=args.spacing, other_spacings=others,
                         other_steps=other_steps, etas=etas, eta_steps=eta_steps,
                         reuse_ddpm=args.reuse_ddpm, reuse=args.reuse)

    results = _cli.measure_and_report(
        args, argv, "tools.sampler_sweep", measure,
        lambda results: markdown_table(results, args.factor),
        lambda results, path: _save_plot(results, path, args.factor))
    if args.out and Path(args.out).resolve() in (SHIPPED.resolve(), SHIPPED_GUIDANCE.resolve()):
        print("a stored sweep changed: refresh its checksum with python -m tools.checksums")
    return results


if __name__ == "__main__":
    main()
