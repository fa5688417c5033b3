"""How the benchmark measures: interleaved timing of training, inference and sampling, and memory.

:func:`run_benchmark` builds every model of every configuration, then for each kind of work
(a training step, an inference pass, DDIM sampling) warms every model up and times them
round-robin, so a slow moment of the machine hits all models alike; it reports medians.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from unet_edu.diffusion import NoiseSchedule, ddim_sample
from unet_edu.models import count_parameters
from unet_edu.runtime import eval_mode

from .. import _cli
from . import configs as _configs
from .configs import (CONFIGS, CUDA_VARIANTS, EAGER, LABELS, OURS, PEERS, Variant, build,
                      cpu_variants, version)
from .report import ratios

__all__ = ["run_benchmark", "measure_memory"]

_ROOT = Path(__file__).resolve().parents[2]
KINDS = ("train", "infer", "sample")
FULL_IMAGES, FULL_STEPS = 64, 50  # the sampling reported: 64 images with 50 DDIM steps




class _Runner(nn.Module):
    """A model with a variant applied: autocast around the call, float32 out."""

    def __init__(self, model: nn.Module, variant: Variant, device: torch.device):
        super().__init__()
        self.model = model.to(device)
        self.variant = variant
        self.device = device
        if variant.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # Not a submodule attribute: the compiled wrapper must not register the weights twice.
        compiled = torch.compile(self.model) if variant.compile else self.model
        object.__setattr__(self, "_call", compiled)

    def forward(self, x, t):
        if self.variant.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.variant.bf16
               else contextlib.nullcontext())
        with ctx:
            out = self._call(x, t)
        return out.float()


@dataclass
class _Entry:
    model: str
    variant: Variant
    runner: _Runner
    optimizer: torch.optim.Optimizer
    params: int
    flop: int | None = None  # of one training step
    times: dict = field(default_factory=lambda: {k: [] for k in KINDS})
    cpu_times: dict = field(default_factory=lambda: {k: [] for k in KINDS})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(entry: _Entry, x0, t, noise, a, b) -> None:
    x_t = a * x0 + b * noise
    loss = F.mse_loss(entry.runner(x_t, t), noise)
    entry.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    entry.optimizer.step()


@torch.no_grad()
def _infer(entry: _Entry, x, t) -> None:
    with eval_mode(entry.runner):
        entry.runner(x, t)


def _sample(entry: _Entry, schedule, shape, steps, seed) -> None:
    ddim_sample(entry.runner, schedule, shape, steps=steps, progress=False,
                generator=torch.Generator().manual_seed(seed))


def _cpu_attention_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward_flop(grad_out, query, key, value, *args, out_shape=None, **kwargs):
    return sdpa_backward_flop_count(grad_out, query, key, value)


# torch's counter knows the GPU attention kernels but not the CPU one: without these two
# entries the attention's matrix products would count as zero.
_CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flop,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
        _cpu_attention_backward_flop,
}


def step_flops(entry: _Entry, x0, t, noise, a, b) -> int:
    """Floating-point operations of one training step (forward and backward; a multiply-add
    counts as 2), counted by :class:`~torch.utils.flop_counter.FlopCounterMode`."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        _train_step(entry, x0, t, noise, a, b)
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, dtype=torch.float32, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large square matrix product: what this device's GEMM reaches, the ceiling a
    network made of convolutions and linear layers can approach."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b, device, 1)[0] for _ in range(repeats))
    return 2 * n**3 / best  # a multiply-add counts 2, as in the step's count


def _timed(fn, device, inner: int) -> tuple[float, float]:
    """Seconds per call: wall-clock time and this process's CPU time."""
    _sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(inner):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / inner, (time.process_time() - cpu_start) / inner


# ----------------------------------------------------------------------------------------------
# Memory.
def _read_status(key: str) -> int | None:
    """A ``/proc/self/status`` field in bytes (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak resident set size (Linux >= 4.0)
        return True
    except OSError:
        return False


def measure_memory(model: str, config: str, device: str = "cpu", batch: int | None = None,
                   variant: Variant = EAGER) -> dict:
    """Peak memory of one training step (and of one inference pass) of ``model``, in bytes.

    CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before the step (the
    model, its inputs).  CPU: the rise of the peak resident set size during the step, which
    includes the optimiser state Adam creates on its first step and allocator overhead; run it
    in a fresh process (:func:`run_benchmark` does) so that memory freed by an earlier model
    does not hide the peak.
    """
    dev = torch.device(device)
    cfg = CONFIGS[config]
    batch = batch or cfg["batch"]["cuda" if dev.type == "cuda" else "cpu"]
    torch.manual_seed(0)
    runner = _Runner(build(model, config), variant, dev)
    entry = _Entry(model, variant, runner, torch.optim.Adam(runner.parameters(), lr=1e-4),
                   count_parameters(runner))
    x0 = torch.randn(batch, *cfg["image"], device=dev)
    noise = torch.randn_like(x0)
    t = torch.randint(0, 1000, (batch,), device=dev)
    a, b = 0.6, 0.8
    calls = {"infer_bytes": lambda: _infer(entry, x0, t),
             "train_bytes": lambda: _train_step(entry, x0, t, noise, a, b)}
    out = {"method": None, "infer_bytes": None, "train_bytes": None}
    if dev.type == "cuda":
        out["method"] = "torch.cuda.max_memory_allocated above the allocation before the call"
        peak = _cuda_peak
    elif _read_status("VmHWM") is None or not _reset_peak_rss():
        out["method"] = "unavailable (needs Linux /proc/self/status and clear_refs)"
        return out
    else:
        out["method"] = "rise of the peak resident set size (VmHWM) during the step"
        peak = _rss_peak
    for key, fn in calls.items():
        out[key] = peak(fn, dev)
    return out


def _cuda_peak(fn, dev: torch.device) -> int:
    """Bytes CUDA allocated during ``fn()`` above what was allocated before it."""
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    fn()
    torch.cuda.synchronize(dev)
    return torch.cuda.max_memory_allocated(dev) - base


def _rss_peak(fn, dev: torch.device) -> int:
    """The rise of this process's peak resident set size during ``fn()`` (Linux)."""
    base = _read_status("VmRSS")
    _reset_peak_rss()
    fn()
    return _read_status("VmHWM") - base


def _memory_in_subprocess(model: str, config: str, device: str, batch: int,
                          threads: int) -> dict:
    call = f"measure_memory({model!r}, {config!r}, {device!r}, {batch})"
    code = (
        "import json, torch; from tools.bench.measure import measure_memory; "
        f"torch.set_num_threads({threads}); print('RESULT' + json.dumps({call}))"
    )
    # Run from the repository root, where ``tools`` is importable.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=_ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[len("RESULT"):])
    tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
    return {"method": f"failed: {tail[0]}", "infer_bytes": None, "train_bytes": None}



# ----------------------------------------------------------------------------------------------
def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _median(values):
    return statistics.median(values) if values else None


def _available(models, log) -> tuple[list[str], dict]:
    """The models that can run here, and a message for each peer that is not installed."""
    wanted, skipped = [], {}
    for m in models:
        if m not in OURS and not _configs.peer_available(m):
            msg = (f"{m} skipped: package {PEERS[m][1]!r} is not installed "
                   f"(pip install -r requirements-bench.txt)")
            log(msg)
            skipped[m] = msg
            continue
        wanted.append(m)
    return wanted, skipped


def _meta(dev: torch.device, repeats: int, warmup: int, inner: int, quick: bool) -> dict:
    on_cuda = dev.type == "cuda"
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(dev), "machine": _cli.machine(), "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "diffusers": version("diffusers"),
                     "denoising-diffusion-pytorch": version("denoising-diffusion-pytorch"),
                     "unet_edu": version("unet-edu")},
        "load_average_before": _load(), "repeats": repeats, "warmup": warmup,
        "warmup_other": warmup if on_cuda else 1,
        "steps_per_timing": inner, "quick": quick,
        "sampling": {"reported_images": FULL_IMAGES, "reported_steps": FULL_STEPS},
        "memory_method": None,
        "cudnn_benchmark": on_cuda,
        # With one CPU thread, CPU time is the time on an idle core, whatever else runs on
        # the machine; wall-clock time also counts waiting for other programs.
        "ratio_basis": "cpu" if not on_cuda and torch.get_num_threads() == 1 else "wall",
    }


def _entries(models, config: str, variants, dev: torch.device, log) -> list[_Entry]:
    """Every model of ``config`` in every variant, each with its own optimiser, same seed."""
    entries = []
    for m in models:
        if m not in CONFIGS[config]:
            continue
        for v in variants:
            torch.manual_seed(0)
            runner = _Runner(build(m, config), v, dev)
            opt = torch.optim.Adam(runner.parameters(), lr=1e-4)
            entries.append(_Entry(m, v, runner, opt, count_parameters(runner)))
    params = {e.model: e.params for e in entries}
    for m, n in params.items():
        rel = n / params["ours"] - 1 if "ours" in params else 0.0
        log(f"  {LABELS[m]:<34} {n:>12,d} parameters ({rel:+.1%} vs ours)")
    return entries


def _jobs(config: str, batch: int, dev: torch.device, schedule, sampling, inner: int) -> dict:
    """The three kinds of work, each a function ``entry -> (wall s, CPU s)`` per call."""
    image = CONFIGS[config]["image"]
    gen = torch.Generator().manual_seed(0)  # the same inputs for every model
    x0 = torch.randn(batch, *image, generator=gen).to(dev)
    noise = torch.randn(batch, *image, generator=gen).to(dev)
    t = torch.randint(0, 1000, (batch,), generator=gen).to(dev)
    a_bar = schedule.at(schedule.alphas_cumprod, t.cpu(), x0)
    a, b = a_bar.sqrt(), (1 - a_bar).sqrt()
    images, steps = sampling
    shape = (images, *image)
    return {
        "train": lambda e: _timed(lambda: _train_step(e, x0, t, noise, a, b), dev, inner),
        "infer": lambda e: _timed(lambda: _infer(e, x0, t), dev, inner),
        "sample": lambda e: _timed(lambda: _sample(e, schedule, shape, steps, 0), dev, 1),
    }


def _time_interleaved(entries, jobs: dict, warmup: int, repeats: int, on_cuda: bool, log) -> None:
    """Warm every model up, then time them round-robin; times go into each entry."""
    for what, job in jobs.items():
        failed = set()
        for e in entries:  # warm-up (compiles, picks kernels, allocates)
            try:
                for _ in range(warmup if what == "train" or on_cuda else 1):  # see meta
                    job(e)
            except Exception as exc:  # e.g. torch.compile unsupported here: record, go on
                log(f"  {e.model}/{e.variant.name} {what}: failed ({type(exc).__name__}: {exc})")
                failed.add(id(e))
        for _ in range(repeats):  # interleaved: each repeat visits every model once
            for e in entries:
                if id(e) not in failed:
                    wall, cpu = job(e)
                    e.times[what].append(wall)
                    e.cpu_times[what].append(cpu)
        log(f"  {what}: " + ", ".join(
            f"{e.model}/{e.variant.name} {_median(e.times[what]) or float('nan'):.4f}s"
            for e in entries))


def _peaks(dev: torch.device, variants) -> dict:
    dtypes = {"float32": torch.float32}
    if any(v.bf16 for v in variants):
        dtypes["bfloat16"] = torch.bfloat16
    return {name: matmul_peak(dev, dtype) for name, dtype in dtypes.items()}


def _count_flops(entries, config: str, batch: int, dev, schedule) -> None:
    """Each entry's FLOPs per training step (uncompiled: the counter cannot see inside a
    compiled graph, and compiling does not change the arithmetic)."""
    image = CONFIGS[config]["image"]
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, *image, generator=gen).to(dev)
    t = torch.randint(0, 1000, (batch,), generator=gen).to(dev)
    a_bar = schedule.at(schedule.alphas_cumprod, t.cpu(), x0)
    for e in entries:
        if e.variant.compile:
            continue
        e.flop = step_flops(e, x0, t, torch.randn_like(x0), a_bar.sqrt(), (1 - a_bar).sqrt())


def _memory(models, config: str, device: str, batch: int, memory: str, meta: dict) -> dict:
    """Peak memory per model (``memory``: "subprocess", "inline" or "off")."""
    mem = {}
    if memory == "off":
        return mem
    for m in (m for m in models if m in CONFIGS[config]):
        if memory == "subprocess":
            mem[m] = _memory_in_subprocess(m, config, device, batch, torch.get_num_threads())
        else:
            mem[m] = measure_memory(m, config, device, batch)
        where = ("a fresh process per model" if memory == "subprocess" else
                 "in-process, so memory freed by an earlier model can hide part of the peak")
        meta["memory_method"] = f"{mem[m]['method']} ({where})"
    return mem


def _record(e: _Entry, config: str, batch: int, scale: float, mem: dict) -> dict:
    """One model's results: throughputs from the median times, raw times, peak memory."""
    tr, inf, smp = (_median(e.times[k]) for k in KINDS)
    ctr, cinf, csmp = (_median(e.cpu_times[k]) for k in KINDS)
    build_args = CONFIGS[config][e.model]
    rec = {
        "label": LABELS[e.model], "variant": e.variant.name, "parameters": e.params,
        "build": {k: list(v) if isinstance(v, tuple) else v for k, v in build_args.items()},
        "batch": batch,
        "train_images_per_s": batch / tr if tr else None,
        "train_flop": e.flop,
        "train_flop_per_s": e.flop / tr if tr and e.flop else None,
        "infer_images_per_s": batch / inf if inf else None,
        "sample_s_64x50": smp * scale if smp else None,
        "train_images_per_cpu_s": batch / ctr if ctr else None,
        "infer_images_per_cpu_s": batch / cinf if cinf else None,
        "sample_cpu_s_64x50": csmp * scale if csmp else None,
        "times_s": {k: [round(v, 6) for v in e.times[k]] for k in e.times},
        "cpu_times_s": {k: [round(v, 6) for v in e.cpu_times[k]] for k in e.cpu_times},
    }
    if e.variant == EAGER and e.model in mem:
        rec["peak_train_bytes"] = mem[e.model]["train_bytes"]
        rec["peak_infer_bytes"] = mem[e.model]["infer_bytes"]
    return rec


def run_benchmark(device: str = "cpu", configs=("mnist28", "rgb32"),
                  models=("ours", "ours_heads8", "diffusers", "lucidrains"),
                  batch: int | None = None, repeats: int = 5, quick: bool = False,
                  sample_images: int | None = None, sample_steps: int | None = None,
                  memory: str = "subprocess", variants=None, log=print) -> dict:
    """Run the benchmark and return the results as a JSON-friendly dict (see the package doc)."""
    dev = torch.device(device)
    on_cuda = dev.type == "cuda"
    if variants is None:
        variants = CUDA_VARIANTS if on_cuda else ((EAGER,) if quick else cpu_variants())
    if on_cuda:
        torch.backends.cudnn.benchmark = True  # let cuDNN pick the fastest kernels, for every model
    warmup = 1 if quick else (3 if on_cuda else 2)
    inner = 10 if on_cuda and not quick else 1
    wanted, skipped = _available(models, log)
    schedule = NoiseSchedule("linear")
    results = {"meta": _meta(dev, repeats, warmup, inner, quick), "skipped": skipped,
               "configs": {}}
    peaks = {} if quick else _peaks(dev, variants)
    for config in configs:
        cfg = CONFIGS[config]
        b = batch or cfg["batch"]["cuda" if on_cuda else "cpu"]
        log(f"\n== {config}: {cfg['title']}; batch {b}, images {cfg['image']}")
        entries = _entries(wanted, config, variants, dev, log)
        # 64 images, 50 DDIM steps on CUDA; on the CPU a slice of the work, scaled linearly.
        n, k = (FULL_IMAGES, FULL_STEPS) if on_cuda else ((4, 2) if quick else cfg["cpu_sampling"])
        s_images, s_steps = sample_images or n, sample_steps or k
        jobs = _jobs(config, b, dev, schedule, (s_images, s_steps), inner)
        _time_interleaved(entries, jobs, warmup, repeats, on_cuda, log)
        if not quick:
            _count_flops(entries, config, b, dev, schedule)
        mem = _memory(wanted, config, device, b, memory, results["meta"])
        scale = (FULL_IMAGES / s_images) * (FULL_STEPS / s_steps)
        out_models = {}
        for e in entries:
            key = e.model if e.variant == EAGER else f"{e.model}/{e.variant.name}"
            out_models[key] = _record(e, config, b, scale, mem)
        results["configs"][config] = {
            "title": cfg["title"], "image": list(cfg["image"]), "batch": b,
            "sampling": {"measured_images": s_images, "measured_steps": s_steps,
                         "scaled": scale != 1.0},
            "models": out_models,
            "ratios": ratios(out_models, results["meta"]["ratio_basis"]),
        }
        for peer, r in results["configs"][config]["ratios"].items():
            log(f"  ours vs {peer}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()
                                                  if isinstance(v, float)))
    results["meta"]["load_average_after"] = _load()
    if not quick:  # measured before and after the models; the better of the two is the peak
        after = _peaks(dev, variants)
        results["meta"]["matmul_flop_per_s"] = {k: max(v, after[k]) for k, v in peaks.items()}
    return results
