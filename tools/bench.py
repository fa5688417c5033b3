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
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unet_edu.models import DiffusionUNet, count_parameters

__all__ = ["CONFIGS", "PEERS", "build", "peer_available", "run_benchmark", "markdown_table",
           "plot_results", "main"]

# ----------------------------------------------------------------------------------------------
# Matched configurations.  "ours" uses time_mode="add" (the timestep is added, as diffusers
# does by default): with it the two models have the same layout and exactly the same number of
# parameters.  denoising-diffusion-pytorch has its own layout (linear attention at the higher
# levels, full attention at the lowest); its width ``dim`` is chosen to match the count.
CONFIGS: dict[str, dict] = {
    "mnist28": dict(
        title="28x28 digits, ~1.7M parameters (the Hugging Face diffusion course's MNIST U-Net)",
        image=(1, 28, 28),
        batch={"cpu": 64, "cuda": 256},
        cpu_sampling=(16, 5),  # images, DDIM steps timed on the CPU (then scaled to 64 x 50)
        ours=dict(in_channels=1, out_channels=1, base_channels=32, channel_mult=(1, 2, 2),
                  num_res_blocks=2, attention_levels=(1, 2), time_mode="add"),
        diffusers=dict(sample_size=28, in_channels=1, out_channels=1, layers_per_block=2,
                       block_out_channels=(32, 64, 64),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
        lucidrains=dict(dim=36, dim_mults=(1, 2, 2), channels=1),
        # diffusers' attention heads are 8 channels wide: 8 heads at 64 channels, where ours
        # defaults to 4.  Same parameters, different cost: this row measures the difference.
        ours_heads8=dict(in_channels=1, out_channels=1, base_channels=32, channel_mult=(1, 2, 2),
                         num_res_blocks=2, attention_levels=(1, 2), time_mode="add", num_heads=8),
    ),
    "rgb32": dict(
        title="32x32 RGB, ~18.5M parameters (4 levels, attention at the two lowest)",
        image=(3, 32, 32),
        batch={"cpu": 16, "cuda": 128},
        cpu_sampling=(8, 5),
        ours=dict(in_channels=3, out_channels=3, base_channels=64, channel_mult=(1, 2, 2, 4),
                  num_res_blocks=2, attention_levels=(2, 3), time_mode="add"),
        diffusers=dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                       block_out_channels=(64, 128, 128, 256),
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D",
                                         "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D")),
        lucidrains=dict(dim=80, dim_mults=(1, 2, 2, 4), channels=3),
    ),
    "tiny": dict(
        title="8x8 digits, ~177k parameters (for tests only)",
        image=(1, 8, 8),
        batch={"cpu": 4, "cuda": 4},
        cpu_sampling=(4, 2),
        ours=dict(in_channels=1, out_channels=1, base_channels=16, channel_mult=(1, 2),
                  num_res_blocks=1, attention_levels=(1,), norm_groups=8, time_mode="add"),
        diffusers=dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(16, 32), norm_num_groups=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D")),
        lucidrains=dict(dim=16, dim_mults=(1, 2), channels=1, attn_heads=1, attn_dim_head=8),
    ),
}

# name -> (python module, distribution on PyPI, how the network is called)
PEERS = {
    "diffusers": ("diffusers", "diffusers"),
    "lucidrains": ("denoising_diffusion_pytorch", "denoising-diffusion-pytorch"),
}
LABELS = {"ours": "unet_edu DiffusionUNet", "diffusers": "diffusers UNet2DModel",
          "lucidrains": "denoising-diffusion-pytorch Unet",
          "ours_heads8": "unet_edu DiffusionUNet, 8 heads"}
_CLASS = {"ours": "DiffusionUNet", "ours_heads8": "DiffusionUNet", "diffusers": "UNet2DModel",
          "lucidrains": "Unet"}
OURS = ("ours", "ours_heads8")  # ours_heads8 runs only where a configuration defines it


def peer_available(name: str) -> bool:
    """True when the peer's package can be imported."""
    import importlib.util

    return importlib.util.find_spec(PEERS[name][0]) is not None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class _DiffusersAdapter(nn.Module):
    """``diffusers`` returns a tuple (or an output object): give it our ``model(x, t)`` call."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        return self.net(x, t, return_dict=False)[0]


class _LucidrainsAdapter(nn.Module):
    """``denoising_diffusion_pytorch.Unet(x, time)`` already has our call; keep one interface."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        return self.net(x, t)


def build(name: str, config: str) -> nn.Module:
    """Build model ``name`` ("ours", "diffusers", "lucidrains") at configuration ``config``.

    Every model is returned as an ``nn.Module`` called as ``model(x, t)`` and returning the
    predicted noise, the call :func:`unet_edu.diffusion.ddim_sample` makes.
    """
    kwargs = CONFIGS[config][name]
    if name in OURS:
        return DiffusionUNet(**kwargs)
    if name == "diffusers":
        from diffusers import UNet2DModel

        return _DiffusersAdapter(UNet2DModel(**kwargs))
    if name == "lucidrains":
        from denoising_diffusion_pytorch import Unet

        return _LucidrainsAdapter(Unet(**kwargs))
    raise ValueError(f"unknown model {name!r}; known: ours, {', '.join(PEERS)}")


# ----------------------------------------------------------------------------------------------
# Variants (CUDA only): the same network run in other precisions, layouts or compiled.
@dataclass(frozen=True)
class Variant:
    name: str
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False


EAGER = Variant("fp32")
CUDA_VARIANTS = (EAGER, Variant("bf16", bf16=True), Variant("bf16+channels_last", True, True),
                 Variant("bf16+compile", True, False, True))


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
        object.__setattr__(self, "_call", torch.compile(self.model) if variant.compile else self.model)

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
    times: dict = field(default_factory=lambda: {"train": [], "infer": [], "sample": []})
    cpu_times: dict = field(default_factory=lambda: {"train": [], "infer": [], "sample": []})


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
    entry.runner.eval()
    entry.runner(x, t)
    entry.runner.train()


def _sample(entry: _Entry, schedule, shape, steps, seed) -> None:
    from unet_edu.diffusion import ddim_sample

    ddim_sample(entry.runner, schedule, shape, steps=steps, progress=False,
                generator=torch.Generator().manual_seed(seed))


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
    out = {"method": None, "infer_bytes": None, "train_bytes": None}
    if dev.type == "cuda":
        out["method"] = "torch.cuda.max_memory_allocated above the allocation before the call"
        for key, fn in (("infer_bytes", lambda: _infer(entry, x0, t)),
                        ("train_bytes", lambda: _train_step(entry, x0, t, noise, a, b))):
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            fn()
            torch.cuda.synchronize(dev)
            out[key] = torch.cuda.max_memory_allocated(dev) - base
        return out
    if _read_status("VmHWM") is None or not _reset_peak_rss():
        out["method"] = "unavailable (needs Linux /proc/self/status and clear_refs)"
        return out
    out["method"] = "rise of the peak resident set size (VmHWM) during the step"
    for key, fn in (("infer_bytes", lambda: _infer(entry, x0, t)),
                    ("train_bytes", lambda: _train_step(entry, x0, t, noise, a, b))):
        base = _read_status("VmRSS")
        _reset_peak_rss()
        fn()
        out[key] = _read_status("VmHWM") - base
    return out


def _memory_in_subprocess(model: str, config: str, device: str, batch: int, threads: int) -> dict:
    code = (
        "import json, torch; from unet_edu import bench; "
        f"torch.set_num_threads({threads}); "
        f"print('RESULT' + json.dumps(bench.measure_memory({model!r}, {config!r}, {device!r}, {batch})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[len("RESULT"):])
    tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
    return {"method": f"failed: {tail[0]}", "infer_bytes": None, "train_bytes": None}


# ----------------------------------------------------------------------------------------------
def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _median(values):
    return statistics.median(values) if values else None


def run_benchmark(device: str = "cpu", configs=("mnist28", "rgb32"), models=("ours", "ours_heads8",
                  "diffusers", "lucidrains"), batch: int | None = None, repeats: int = 5, quick: bool = False,
                  sample_images: int | None = None, sample_steps: int | None = None,
                  memory: str = "subprocess", variants=None, log=print) -> dict:
    """Run the benchmark and return the results as a JSON-friendly dict (see the module doc)."""
    dev = torch.device(device)
    on_cuda = dev.type == "cuda"
    if variants is None:
        variants = CUDA_VARIANTS if on_cuda else (EAGER,)
    if on_cuda:
        torch.backends.cudnn.benchmark = True  # let cuDNN pick the fastest kernels, for every model
    warmup = 1 if quick else (3 if on_cuda else 2)
    inner = 10 if on_cuda and not quick else 1
    # 64 images, 50 DDIM steps on CUDA; on the CPU a slice of the work, scaled linearly.
    full_images, full_steps = 64, 50

    def sampling_slice(config):
        if on_cuda:
            n, k = full_images, full_steps
        else:
            n, k = (4, 2) if quick else CONFIGS[config]["cpu_sampling"]
        return sample_images or n, sample_steps or k
    skipped = {}
    wanted = []
    for m in models:
        if m not in OURS and not peer_available(m):
            msg = (f"{m} skipped: package {PEERS[m][1]!r} is not installed "
                   f"(pip install -r requirements-bench.txt)")
            log(msg)
            skipped[m] = msg
            continue
        wanted.append(m)
    from unet_edu.diffusion import NoiseSchedule

    schedule = NoiseSchedule("linear")
    results = {
        "meta": {
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": str(dev), "machine": machine(), "torch_threads": torch.get_num_threads(),
            "versions": {"torch": torch.__version__, "diffusers": _version("diffusers"),
                         "denoising-diffusion-pytorch": _version("denoising-diffusion-pytorch"),
                         "unet_edu": _version("unet-edu")},
            "load_average_before": _load(), "repeats": repeats, "warmup": warmup,
            "warmup_other": warmup if on_cuda else 1,
            "steps_per_timing": inner, "quick": quick,
            "sampling": {"reported_images": full_images, "reported_steps": full_steps},
            "memory_method": None,
            "cudnn_benchmark": on_cuda,
            # With one CPU thread, CPU time is the time on an idle core, whatever else runs on
            # the machine; wall-clock time also counts waiting for other programs.
            "ratio_basis": "cpu" if not on_cuda and torch.get_num_threads() == 1 else "wall",
        },
        "skipped": skipped,
        "configs": {},
    }
    for config in configs:
        cfg = CONFIGS[config]
        b = batch or cfg["batch"]["cuda" if on_cuda else "cpu"]
        log(f"\n== {config}: {cfg['title']}; batch {b}, images {cfg['image']}")
        entries: list[_Entry] = []
        for m in wanted:
            if m not in cfg:
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
        gen = torch.Generator().manual_seed(0)
        x0 = torch.randn(b, *cfg["image"], generator=gen).to(dev)
        noise = torch.randn(b, *cfg["image"], generator=gen).to(dev)
        t = torch.randint(0, 1000, (b,), generator=gen).to(dev)
        a_bar = schedule.at(schedule.alphas_cumprod, t.cpu(), x0)
        a, bb = a_bar.sqrt(), (1 - a_bar).sqrt()
        s_images, s_steps = sampling_slice(config)
        shape = (s_images, *cfg["image"])
        jobs = {
            "train": lambda e: _timed(lambda: _train_step(e, x0, t, noise, a, bb), dev, inner),
            "infer": lambda e: _timed(lambda: _infer(e, x0, t), dev, inner),
            "sample": lambda e: _timed(lambda: _sample(e, schedule, shape, s_steps, 0), dev, 1),
        }
        for what, job in jobs.items():
            failed = set()
            for e in entries:  # warm-up (compiles, picks kernels, allocates)
                try:
                    for _ in range(warmup if what == "train" or on_cuda else 1):  # see meta
                        job(e)
                except Exception as exc:  # e.g. torch.compile unsupported here: record, go on
                    log(f"  {e.model}/{e.variant.name} {what}: failed ({type(exc).__name__}: {exc})")
                    failed.add(id(e))
            for r in range(repeats):  # interleaved: each repeat visits every model once
                for e in entries:
                    if id(e) not in failed:
                        wall, cpu = job(e)
                        e.times[what].append(wall)
                        e.cpu_times[what].append(cpu)
            log(f"  {what}: " + ", ".join(
                f"{e.model}/{e.variant.name} {_median(e.times[what]) or float('nan'):.4f}s"
                for e in entries))
        mem = {}
        if memory != "off":
            for m in (m for m in wanted if m in cfg):
                if memory == "subprocess":
                    mem[m] = _memory_in_subprocess(m, config, device, b, torch.get_num_threads())
                else:
                    mem[m] = measure_memory(m, config, device, b)
                where = ("a fresh process per model" if memory == "subprocess" else
                         "in-process, so memory freed by an earlier model can hide part of the peak")
                results["meta"]["memory_method"] = f"{mem[m]['method']} ({where})"
        scale = (full_images / s_images) * (full_steps / s_steps)
        out_models = {}
        for e in entries:
            key = e.model if e.variant == EAGER else f"{e.model}/{e.variant.name}"
            tr, inf, smp = (_median(e.times[k]) for k in ("train", "infer", "sample"))
            ctr, cinf, csmp = (_median(e.cpu_times[k]) for k in ("train", "infer", "sample"))
            rec = {
                "label": LABELS[e.model], "variant": e.variant.name, "parameters": e.params,
                "build": CONFIGS[config][e.model] | {}, "batch": b,
                "train_images_per_s": b / tr if tr else None,
                "infer_images_per_s": b / inf if inf else None,
                "sample_s_64x50": smp * scale if smp else None,
                "train_images_per_cpu_s": b / ctr if ctr else None,
                "infer_images_per_cpu_s": b / cinf if cinf else None,
                "sample_cpu_s_64x50": csmp * scale if csmp else None,
                "times_s": {k: [round(v, 6) for v in e.times[k]] for k in e.times},
                "cpu_times_s": {k: [round(v, 6) for v in e.cpu_times[k]] for k in e.cpu_times},
            }
            if e.variant == EAGER and e.model in mem:
                rec["peak_train_bytes"] = mem[e.model]["train_bytes"]
                rec["peak_infer_bytes"] = mem[e.model]["infer_bytes"]
            rec["build"] = {k: list(v) if isinstance(v, tuple) else v for k, v in rec["build"].items()}
            out_models[key] = rec
        results["configs"][config] = {"title": cfg["title"], "image": list(cfg["image"]), "batch": b,
                                      "sampling": {"measured_images": s_images,
                                                   "measured_steps": s_steps,
                                                   "scaled": scale != 1.0},
                                      "models": out_models,
                                      "ratios": _ratios(out_models, results["meta"]["ratio_basis"])}
        for peer, r in results["configs"][config]["ratios"].items():
            log(f"  ours vs {peer}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()
                                                  if isinstance(v, float)))
    results["meta"]["load_average_after"] = _load()
    return results


def _ratios(models: dict, basis: str = "wall") -> dict:
    """ours/peer for throughputs, peer/ours for time and memory: above 1 means ours is better.

    ``basis="cpu"`` compares CPU times (single-threaded CPU runs), ``"wall"`` wall-clock times.
    """
    out = {}
    for key, rec in models.items():
        name, _, variant = key.partition("/")
        if name in OURS:
            continue
        for mine in OURS:
            if mine == "ours_heads8" and name != "diffusers":
                continue  # that row exists to compare with diffusers' attention heads
            ours = models.get(mine + (f"/{variant}" if variant else ""))
            if ours is not None:
                out[key if mine == "ours" else f"{key}|{mine}"] = _ratio_row(ours, rec, basis)
    return out


def _ratio_row(ours: dict, rec: dict, basis: str = "wall") -> dict:
    cpu = basis == "cpu"

    def ratio(k, higher_is_better):
        o, p = ours.get(k), rec.get(k)
        if not o or not p or o <= 0 or p <= 0:
            return None
        return o / p if higher_is_better else p / o

    return {
        "parameters": rec["parameters"] / ours["parameters"],
        "train": ratio("train_images_per_cpu_s" if cpu else "train_images_per_s", True),
        "inference": ratio("infer_images_per_cpu_s" if cpu else "infer_images_per_s", True),
        "sampling": ratio("sample_cpu_s_64x50" if cpu else "sample_s_64x50", False),
        "memory": ratio("peak_train_bytes", False),
    }


# ----------------------------------------------------------------------------------------------
def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def markdown_table(results: dict) -> str:
    """The results as Markdown: machine, one table per configuration, the ratios."""
    meta = results["meta"]
    mach = meta["machine"]
    v = meta["versions"]
    s = meta["sampling"]
    lines = [
        f"Measured on {meta['date']}: {mach.get('gpu') or mach['cpu']} "
        f"({mach['cpu_count']} CPU cores, {meta['torch_threads']} torch threads), device "
        f"`{meta['device']}`; torch {v['torch']}, diffusers {v['diffusers'] or 'not installed'}, "
        f"denoising-diffusion-pytorch {v['denoising-diffusion-pytorch'] or 'not installed'}. "
        f"Load average (1, 5, 15 min) before the run {meta['load_average_before']}, after "
        f"{meta['load_average_after']}. Medians of {meta['repeats']} interleaved repeats, after "
        f"{meta['warmup']} warm-up training steps and {meta['warmup_other']} warm-up run(s) of "
        f"inference and sampling per model.",
        "",
    ]
    basis = meta.get("ratio_basis", "wall")
    if basis == "cpu":
        lines += ["Times were taken twice: on the wall clock, and as the CPU time this process "
                  "used. With one torch thread the CPU time is the time the work takes on an idle "
                  "core, whatever else runs on the machine, so the ratios use it; wall-clock "
                  "throughput also counts the time spent waiting for other programs.", ""]
    if meta.get("memory_method"):
        lines += [f"Peak memory of a training step: {meta['memory_method']}.", ""]
    for name in results["skipped"].values():
        lines += [f"* {name}"]
    if results["skipped"]:
        lines += [""]
    for config, res in results["configs"].items():
        lines += [f"**{config}: {res['title']}** (batch {res['batch']})", ""]
        sm = res["sampling"]
        if sm["scaled"]:
            lines += [f"Sampling: {sm['measured_images']} images with {sm['measured_steps']} DDIM "
                      f"steps were timed and the time scaled linearly to {s['reported_images']} "
                      f"images with {s['reported_steps']} steps.", ""]
        cpu = basis == "cpu"
        head = ("| model | variant | parameters | train, images/s | inference, images/s "
                "| DDIM-50, 64 images, s |")
        if cpu:
            head += (" train, images per CPU-s | inference, images per CPU-s "
                     "| DDIM-50, 64 images, CPU-s |")
        head += " peak memory, train step, MB |"
        lines += [head, "|---|---|" + "---:|" * (head.count("|") - 3)]
        for rec in res["models"].values():
            mem = rec.get("peak_train_bytes")
            mem = mem if mem and mem > 0 else None
            row = (f"| {rec['label']} | {rec['variant']} | {rec['parameters']:,} | "
                   f"{_fmt(rec['train_images_per_s'], '.1f')} | {_fmt(rec['infer_images_per_s'], '.1f')} | "
                   f"{_fmt(rec['sample_s_64x50'], '.1f')} |")
            if cpu:
                row += (f" {_fmt(rec.get('train_images_per_cpu_s'), '.1f')} | "
                        f"{_fmt(rec.get('infer_images_per_cpu_s'), '.1f')} | "
                        f"{_fmt(rec.get('sample_cpu_s_64x50'), '.1f')} |")
            lines.append(row + f" {_fmt(mem and mem / 2**20, '.0f')} |")
        lines += ["", "Built with:", ""]
        for key, rec in res["models"].items():
            if "/" in key:
                continue
            args = ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v!r}"
                             for k, v in rec["build"].items())
            lines.append(f"* {rec['label']}: `{_CLASS[key.partition('/')[0]]}({args})`")
        lines += ["", f"| ratio (above 1: ours better; {'CPU' if cpu else 'wall-clock'} time) "
                  "| parameters (peer/ours) | train | inference | sampling | memory |",
                  "|---|---:|---:|---:|---:|---:|"]
        for peer, r in _ratios(res["models"], basis).items():
            peer, _, mine = peer.partition("|")
            name, _, variant = peer.partition("/")
            label = (f"{'ours' if not mine else 'ours with 8 heads'} vs {LABELS[name]}"
                     + (f" ({variant})" if variant else ""))
            lines.append(f"| {label} | {r['parameters']:.3f} | {_fmt(r['train'], '.2f')} | "
                         f"{_fmt(r['inference'], '.2f')} | {_fmt(r['sampling'], '.2f')} | "
                         f"{_fmt(r['memory'], '.2f')} |")
        lines.append("")
    return "\n".join(lines)


def plot_results(results: dict, path) -> None:
    """Bar chart of the ratios (ours vs each peer; above 1 = ours better), one panel per config."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = [c for c, r in results["configs"].items() if r["ratios"]]
    fig, axes = plt.subplots(1, max(1, len(configs)), figsize=(5.2 * max(1, len(configs)), 3.4),
                             squeeze=False)
    kinds = ["train", "inference", "sampling", "memory"]
    for ax, config in zip(axes[0], configs):
        ratios = _ratios(results["configs"][config]["models"], results["meta"].get("ratio_basis", "wall"))
        width = 0.8 / max(1, len(ratios))
        seen = []
        for i, (peer, r) in enumerate(ratios.items()):
            xs = [k + (i - (len(ratios) - 1) / 2) * width for k in range(len(kinds))]
            peer, _, mine = peer.partition("|")
            label = f"vs {peer}" + (" (ours with 8 heads)" if mine == "ours_heads8" else "")
            vals = [r[k] if r[k] else float("nan") for k in kinds]
            seen += [v for v in vals if v == v]
            # Bars start at 1 (a tie) and go up when ours is better, down when it is worse.
            bars = ax.bar(xs, [v - 1 for v in vals], width, bottom=1.0, label=label)
            ax.bar_label(bars, labels=["" if v != v else f"{v:.2f}" for v in vals], fontsize=7,
                         padding=1)
        ax.set_yscale("log")  # 2x faster and 2x slower sit at the same distance from 1
        lo, hi = min(seen + [1.0]), max(seen + [1.0])
        ax.set_ylim(lo / 1.25, hi * 1.7)  # room for the legend above the bars
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xticks(range(len(kinds)), kinds)
        ax.set_title(config)
        ax.set_ylabel("ours / peer (above 1: ours better)")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict | None:
    p = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--configs", default="mnist28,rgb32",
                   help=f"comma-separated, from {', '.join(CONFIGS)}")
    p.add_argument("--models", default="ours,ours_heads8,diffusers,lucidrains")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: per config and device)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 5, quick 2)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--sample-images", type=int, default=None)
    p.add_argument("--sample-steps", type=int, default=None)
    p.add_argument("--memory", choices=["subprocess", "inline", "off"], default=None,
                   help="how to measure peak memory (default: subprocess; quick: inline)")
    p.add_argument("--no-variants", action="store_true", help="CUDA: fp32 eager only")
    p.add_argument("--quick", action="store_true", help="a fast smoke run: fewer repeats and samples")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--markdown", default=None, help="write the Markdown table here")
    p.add_argument("--plot", default=None, help="write the ratio plot (PNG) here")
    p.add_argument("--from-json", default=None, help="do not measure: render --markdown/--plot from this file")
    args = p.parse_args(argv)
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        configs = [c.strip() for c in args.configs.split(",") if c.strip()]
        unknown = [c for c in configs if c not in CONFIGS]
        if unknown:
            p.error(f"unknown configs {unknown}; choose from {', '.join(CONFIGS)}")
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        bad = [m for m in models if m not in OURS and m not in PEERS]
        if bad:
            p.error(f"unknown models {bad}; choose from {', '.join(OURS + tuple(PEERS))}")
        results = run_benchmark(
            device=args.device, configs=configs, models=models, batch=args.batch,
            repeats=args.repeats or (2 if args.quick else 5), quick=args.quick,
            sample_images=args.sample_images, sample_steps=args.sample_steps,
            memory=args.memory or ("inline" if args.quick else "subprocess"),
            variants=(EAGER,) if args.no_variants else None)
        results["meta"]["command"] = "python -m tools.bench " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
            print(f"results written to {args.out}")
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(results))
    if args.plot:
        plot_results(results, args.plot)
    if not args.out and not args.markdown and not args.plot:
        print(markdown_table(results))
    return results


if __name__ == "__main__":
    main()
