"""How fast is the book's DiffusionUNet?  A benchmark against two widely used implementations.

``python -m tools.bench`` builds :class:`~unet_edu.models.DiffusionUNet` and, when they are
installed (``pip install -r requirements-bench.txt``), the U-Nets of Hugging Face ``diffusers``
(``UNet2DModel``) and of ``denoising-diffusion-pytorch`` (``Unet``) at matched sizes (parameter
counts within 5%), and measures, interleaved (round-robin over the models, several repeats,
after warm-up; medians):

* training throughput: forward + backward + Adam step, images per second;
* inference throughput: one forward pass without gradients, images per second;
* sampling time: 64 images with 50 DDIM steps, through :func:`unet_edu.diffusion.ddim_sample`
  for every model (a thin adapter gives each peer our ``model(x, t)`` call), so only the
  network differs.  On the CPU fewer images and steps are run and the time is scaled
  linearly; the results file records what was run;
* peak memory of a training step: ``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the
  rise of the process's peak resident set size (``VmHWM``, reset through
  ``/proc/self/clear_refs``) during one training step, in a fresh process per model.

Ratios are *ours / peer* for throughputs and *peer / ours* for time and memory, so a ratio
above 1 always means ours is better.  On CUDA the benchmark also measures bf16 autocast,
channels-last memory layout and ``torch.compile`` variants of every model.

``--markdown FILE`` and ``--plot FILE`` turn a results file into the table and the figure of
the book's appendix page "How fast is it?".

The package has three parts: :mod:`~tools.bench.configs` (what is compared),
:mod:`~tools.bench.measure` (how it is timed) and :mod:`~tools.bench.report` (tables, figure);
the options shared with ``tools.sampler_sweep`` come from :mod:`tools._cli`.
"""

from __future__ import annotations

import argparse

import torch

from .. import _cli
from .configs import CONFIGS, EAGER, OURS, PEERS, build, peer_available
from .measure import measure_memory, run_benchmark
from .report import markdown_table, plot_results, ratios

__all__ = ["CONFIGS", "PEERS", "build", "peer_available", "run_benchmark", "measure_memory",
           "markdown_table", "plot_results", "ratios", "main"]


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--configs", default="mnist28,rgb32",
                   help=f"comma-separated, from {', '.join(CONFIGS)}")
    p.add_argument("--models", default="ours,ours_heads8,diffusers,lucidrains")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size (default: per config and device)")
    p.add_argument("--repeats", type=int, default=None,
                   help="interleaved repeats (default 5, quick 2)")
    p.add_argument("--sample-images", type=int, default=None)
    p.add_argument("--sample-steps", type=int, default=None)
    p.add_argument("--memory", choices=["subprocess", "inline", "off"], default=None,
                   help="how to measure peak memory (default: subprocess; quick: inline)")
    p.add_argument("--no-variants", action="store_true", help="CUDA: fp32 eager only")
    p.add_argument("--quick", action="store_true",
                   help="a fast smoke run: fewer repeats and samples")
    _cli.add_report_arguments(p, measuring="measure", figure="ratio plot")
    args = p.parse_args(argv)
    configs, models = _names(args.configs), _names(args.models)
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configs {unknown}; choose from {', '.join(CONFIGS)}")
    bad = [m for m in models if m not in OURS and m not in PEERS]
    if bad:
        p.error(f"unknown models {bad}; choose from {', '.join(OURS + tuple(PEERS))}")

    def measure():
        return run_benchmark(
            device=args.device, configs=configs, models=models, batch=args.batch,
            repeats=args.repeats or (2 if args.quick else 5), quick=args.quick,
            sample_images=args.sample_images, sample_steps=args.sample_steps,
            memory=args.memory or ("inline" if args.quick else "subprocess"),
            variants=(EAGER,) if args.no_variants else None)

    return _cli.measure_and_report(args, argv, "tools.bench", measure, markdown_table,
                                   plot_results)
