"""Where a training step's time goes at 8 heads, and how much any attention kernel could gain.

``python -m tools.bench.attention`` answers two questions about the ``mnist28`` network with
diffusers' attention layout (8 heads, 8 channels each), on the machine it runs on:

1. **Which attention path is faster here?**  For every attention shape of the network (the
   14 x 14 and 7 x 7 levels), one forward and backward pass through PyTorch's fused kernel
   (:func:`~torch.nn.functional.scaled_dot_product_attention`) against the textbook path of
   two batched matrix products around a softmax, ``softmax(q k^T / sqrt(d)) v``.  The same
   arithmetic, timed interleaved; multiplied by the number of layers of each shape.
2. **What is the ceiling?**  Training steps, interleaved in one run, of ours with 8 heads, of
   the same network with the attention's core removed (each layer returns its values ``v``:
   the projections, the normalisation and the residual still run, but nothing attends), of
   ours with its default 4 heads, and of diffusers' ``UNet2DModel``.  No implementation of
   attention can make the 8-head network faster than the network without it, so the second
   row bounds what a faster attention path could give.

Each training row has its FLOPs per step (counted as in the benchmark) and the share of this
machine's float32 GEMM rate the step reaches.  The appendix "How fast is it?" shows the
table.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import unet_edu.blocks as _blocks

from .. import _cli
from .configs import CONFIGS, LABELS, build, peer_available
from .measure import _CPU_ATTENTION, _timed, matmul_peak

__all__ = ["ROWS", "GOAL", "run", "goal_budget", "markdown_table", "main"]

GOAL = 1.3  # the speed-up over diffusers asked for at 8 heads, in float32

ROWS = {
    "ours_heads8": "unet_edu DiffusionUNet, 8 heads (fused attention kernel)",
    "ours_heads8_noattn": "the same, attention core removed (the ceiling; not a usable network)",
    "ours": "unet_edu DiffusionUNet, 4 heads (its default)",
    "diffusers": LABELS["diffusers"],
}


def textbook_attention(q, k, v):
    """``softmax(q k^T / sqrt(d)) v`` as two batched matrix products around a softmax."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return scores.softmax(dim=-1) @ v


PATHS = {"fused kernel": F.scaled_dot_product_attention, "batched matmuls": textbook_attention}


@contextlib.contextmanager
def _attention_replaced(attend):
    """Every attention layer of the book's U-Nets calls ``attend(q, k, v)`` meanwhile."""
    keep = _blocks._attend
    _blocks._attend = attend
    try:
        yield
    finally:
        _blocks._attend = keep


class _WithoutAttentionCore(nn.Module):
    """A DiffusionUNet whose attention layers return their values instead of attending."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, t):
        # v * 1.0: a copy, as attention's output would be
        with _attention_replaced(lambda q, k, v: v * 1.0):
            return self.model(x, t)


def _model(row: str, config: str) -> nn.Module:
    if row == "ours_heads8_noattn":
        return _WithoutAttentionCore(build("ours_heads8", config))
    return build(row, config)


def _attention_shapes(config: str, batch: int) -> dict:
    """``(batch, heads, positions, head dim) -> number of layers`` of the 8-head network."""
    model = build("ours_heads8", config)
    shapes: dict = {}

    def record(q, k, v):
        key = tuple(q.shape)
        shapes[key] = shapes.get(key, 0) + 1
        return v

    c, h, w = CONFIGS[config]["image"]
    with _attention_replaced(record), torch.no_grad():
        model(torch.zeros(batch, c, h, w), torch.zeros(batch, dtype=torch.long))
    return shapes


def _time(fn, inner: int) -> float:
    """Wall-clock seconds per call of ``fn`` on the CPU."""
    return _timed(fn, torch.device("cpu"), inner)[0]


def _paths(shapes: dict, repeats: int, inner: int, log) -> list[dict]:
    rows = []
    for shape, layers in shapes.items():
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(shape, generator=gen).requires_grad_() for _ in range(3))
        grad = torch.randn(shape, generator=gen)

        def job(f):
            def run():
                f(q, k, v).backward(grad)
            return run

        jobs = {name: job(f) for name, f in PATHS.items()}
        for run in jobs.values():
            run()  # warm-up
        times = {name: [] for name in jobs}
        for _ in range(repeats):
            for name, run in jobs.items():
                times[name].append(_time(run, inner))
        med = {name: statistics.median(ts) for name, ts in times.items()}
        rows.append({"shape": list(shape), "layers": layers,
                     "ms_per_call": {n: 1e3 * s for n, s in med.items()}})
        log(f"  attention {shape} x{layers}: " +
            ", ".join(f"{n} {1e3 * s:.1f} ms" for n, s in med.items()))
    return rows


def _train_step(model, opt, x0, t, noise, a, b) -> None:
    loss = F.mse_loss(model(a * x0 + b * noise, t), noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _flops(model, opt, *data) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        _train_step(model, opt, *data)
    return int(counter.get_total_flops())


def run(config: str = "mnist28", batch: int | None = None, repeats: int = 7, inner: int = 3,
        log=print) -> dict:
    """Measure both parts (see the module docstring); return the results as a dict."""
    batch = batch or CONFIGS[config]["batch"]["cpu"]
    rows = [r for r in ROWS if r != "diffusers" or peer_available("diffusers")]
    if "diffusers" not in rows:
        log("diffusers skipped: not installed (pip install -r requirements-bench.txt)")
    peak_before = matmul_peak(torch.device("cpu"))
    paths = _paths(_attention_shapes(config, batch), repeats, inner, log)

    gen = torch.Generator().manual_seed(0)
    image = CONFIGS[config]["image"]
    x0 = torch.randn(batch, *image, generator=gen)
    noise = torch.randn(batch, *image, generator=gen)
    t = torch.randint(0, 1000, (batch,), generator=gen)
    a = torch.rand(batch, 1, 1, 1, generator=gen)
    data = (x0, t, noise, a.sqrt(), (1 - a).sqrt())
    models, opts, flops = {}, {}, {}
    for r in rows:
        torch.manual_seed(0)
        models[r] = _model(r, config)
        opts[r] = torch.optim.Adam(models[r].parameters(), lr=1e-4)
        flops[r] = _flops(models[r], opts[r], *data)  # also the warm-up step
    times = {r: [] for r in rows}
    for _ in range(repeats):
        for r in rows:
            times[r].append(_time(lambda: _train_step(models[r], opts[r], *data), inner))
    peak = max(peak_before, matmul_peak(torch.device("cpu")))
    train = {}
    for r in rows:
        s = statistics.median(times[r])
        train[r] = {"label": ROWS[r], "images_per_s": batch / s, "ms_per_step": 1e3 * s,
                    "flop": flops[r], "flop_per_s": flops[r] / s,
                    "gemm_share": flops[r] / s / peak}
        log(f"  {ROWS[r]}: {batch / s:.1f} images/s")
    meta = {"machine": _cli.machine(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "config": config, "batch": batch,
            "repeats": repeats, "steps_per_timing": inner, "gemm_fp32_flop_per_s": peak,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    return {"meta": meta, "attention_paths": paths, "train": train}


def goal_budget(res: dict, goal: float = GOAL) -> dict | None:
    """What reaching ``goal`` x diffusers would take: the step time it allows, the time left for
    attention once the rest of the step (the network without its attention core) is paid, and
    how many times faster than today's attention that is.  None without diffusers' row."""
    train = res["train"]
    if "diffusers" not in train:
        return None
    allowed = train["diffusers"]["ms_per_step"] / goal
    rest = train["ours_heads8_noattn"]["ms_per_step"]
    now = train["ours_heads8"]["ms_per_step"] - rest
    left = allowed - rest
    return {"goal": goal, "allowed_ms": allowed, "rest_ms": rest, "attention_now_ms": now,
            "attention_budget_ms": left,
            "ceiling": train["diffusers"]["ms_per_step"] / rest,
            "needed_speedup": now / left if left > 0 else float("inf")}


def markdown_table(res: dict) -> str:
    m, train = res["meta"], res["train"]
    out = [f"Measured on {m['date']}: {m['machine']['cpu']} ({m['machine']['cpu_count']} CPU "
           f"cores, {m['torch_threads']} torch threads), torch {m['torch']}; {m['config']}, "
           f"batch {m['batch']}, float32; medians of {m['repeats']} interleaved repeats of "
           f"{m['steps_per_timing']} steps. Float32 GEMM rate (a 2048 x 2048 product): "
           f"{m['gemm_fp32_flop_per_s'] / 1e9:.0f} GFLOP/s.", ""]
    names = list(PATHS)
    out += ["| attention shape (batch, heads, positions, head dim) | layers | " +
            " | ".join(f"{n}, ms per layer (fwd + bwd)" for n in names) + " | per step, ms: " +
            " / ".join(names) + " |", "|---|---:|" + "---:|" * (len(names) + 1)]
    for p in res["attention_paths"]:
        ms = p["ms_per_call"]
        out.append(f"| {tuple(p['shape'])} | {p['layers']} | " +
                   " | ".join(f"{ms[n]:.1f}" for n in names) + " | " +
                   " / ".join(f"{ms[n] * p['layers']:.0f}" for n in names) + " |")
    out += ["", "| training step | images/s | ms per step | GFLOP per step | GFLOP/s "
            "(share of GEMM rate) | vs diffusers |", "|---|---:|---:|---:|---:|---:|"]
    ref = train.get("diffusers")
    for r in train.values():
        vs = f"{r['images_per_s'] / ref['images_per_s']:.2f}x" if ref else "n/a"
        out.append(f"| {r['label']} | {r['images_per_s']:.1f} | {r['ms_per_step']:.0f} | "
                   f"{r['flop'] / 1e9:.1f} | {r['flop_per_s'] / 1e9:.0f} "
                   f"({r['gemm_share']:.0%}) | {vs} |")
    b = goal_budget(res)
    if b:
        need = (f"{b['needed_speedup']:.1f} times faster than now"
                if b["attention_budget_ms"] > 0 else "less than nothing: out of reach")
        out += ["", f"The goal, {b['goal']}x diffusers' speed, allows a step of "
                f"{b['allowed_ms']:.0f} ms. The network without its attention core takes "
                f"{b['rest_ms']:.0f} ms (at most {b['ceiling']:.2f}x diffusers, whatever the "
                f"attention path), which leaves the attention {b['attention_budget_ms']:.0f} ms "
                f"per step against the {b['attention_now_ms']:.0f} ms it takes with the fused "
                f"kernel: {need}."]
    return "\n".join(out) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m tools.bench.attention", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="mnist28", choices=sorted(CONFIGS))
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--repeats", type=int, default=7)
    _cli.add_report_arguments(p)
    args = p.parse_args(argv)
    if args.plot:
        p.error("--plot: this tool writes a table only (use --markdown)")
    return _cli.measure_and_report(
        args, argv, "tools.bench.attention",
        lambda: run(args.config, args.batch, args.repeats),
        markdown_table, lambda res, path: None)


if __name__ == "__main__":
    main()
