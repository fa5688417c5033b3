"""How the benchmark reports: ratios, the Markdown tables and the figure of the appendix.

Ratios are *ours / peer* for throughputs and *peer / ours* for time and memory, so a ratio
above 1 always means ours is better.
"""

from __future__ import annotations

from .._cli import save_figure
from .configs import CLASS_NAMES, LABELS, OURS

__all__ = ["ratios", "markdown_table", "plot_results"]


def ratios(models: dict, basis: str = "wall") -> dict:
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


def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def _preamble(meta: dict, skipped: dict) -> list[str]:
    """Where and how it was measured, and what was skipped."""
    mach, v = meta["machine"], meta["versions"]
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
    if meta.get("ratio_basis", "wall") == "cpu":
        lines += ["Times were taken twice: on the wall clock, and as the CPU time this process "
                  "used. With one torch thread the CPU time is the time the work takes on an idle "
                  "core, whatever else runs on the machine, so the ratios use it; wall-clock "
                  "throughput also counts the time spent waiting for other programs.", ""]
    peaks = meta.get("matmul_flop_per_s")
    if peaks:
        lines += ["GEMM peak (a 2048 x 2048 matrix product, best of 10 before and 10 after the models): "
                  + ", ".join(f"{v / 1e9:.0f} GFLOP/s in {k}" for k, v in peaks.items()) + ".",
                  ""]
    if meta.get("memory_method"):
        lines += [f"Peak memory of a training step: {meta['memory_method']}.", ""]
    lines += [f"* {name}" for name in skipped.values()]
    return lines + ([""] if skipped else [])


_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def _flop_rate(rec: dict, peaks: dict) -> str:
    """A training step's GFLOP/s, and the share of the GEMM peak in the variant's dtype."""
    rate = rec.get("train_flop_per_s")
    if not rate:
        return "n/a"
    dtype = _DTYPES.get(rec["variant"].partition("+")[0], "float32")
    peak = peaks.get(dtype)
    return f"{rate / 1e9:.0f}" + (f" ({rate / peak:.0%})" if peak else "")


def _models_table(res: dict, cpu: bool, peaks: dict | None = None) -> list[str]:
    """One row per model (and variant): throughputs, sampling time, peak memory."""
    flops = any(rec.get("train_flop") for rec in res["models"].values())
    head = ("| model | variant | parameters | train, images/s "
            + ("| train, GFLOP/s (share of GEMM peak) " if flops else "")
            + "| inference, images/s | DDIM-50, 64 images, s |")
    if cpu:
        head += (" train, images per CPU-s | inference, images per CPU-s "
                 "| DDIM-50, 64 images, CPU-s |")
    head += " peak memory, train step, MB |"
    lines = [head, "|---|---|" + "---:|" * (head.count("|") - 3)]
    for rec in res["models"].values():
        mem = rec.get("peak_train_bytes")
        mem = mem if mem and mem > 0 else None
        row = (f"| {rec['label']} | {rec['variant']} | {rec['parameters']:,} | "
               f"{_fmt(rec['train_images_per_s'], '.1f')} | "
               + (f"{_flop_rate(rec, peaks or {})} | " if flops else "")
               + f"{_fmt(rec['infer_images_per_s'], '.1f')} | "
               f"{_fmt(rec['sample_s_64x50'], '.1f')} |")
        if cpu:
            row += (f" {_fmt(rec.get('train_images_per_cpu_s'), '.1f')} | "
                    f"{_fmt(rec.get('infer_images_per_cpu_s'), '.1f')} | "
                    f"{_fmt(rec.get('sample_cpu_s_64x50'), '.1f')} |")
        lines.append(row + f" {_fmt(mem and mem / 2**20, '.0f')} |")
    return lines


def _build_lines(res: dict) -> list[str]:
    """How each model was built, as a call one can copy."""
    lines = ["Built with:", ""]
    for key, rec in res["models"].items():
        if "/" in key:
            continue
        args = ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v!r}"
                         for k, v in rec["build"].items())
        lines.append(f"* {rec['label']}: `{CLASS_NAMES[key.partition('/')[0]]}({args})`")
    return lines


def _ratios_table(res: dict, basis: str) -> list[str]:
    clock = "CPU" if basis == "cpu" else "wall-clock"
    lines = [f"| ratio (above 1: ours better; {clock} time) "
             "| parameters (peer/ours) | train | inference | sampling | memory |",
             "|---|---:|---:|---:|---:|---:|"]
    for peer, r in ratios(res["models"], basis).items():
        peer, _, mine = peer.partition("|")
        name, _, variant = peer.partition("/")
        label = (f"{'ours' if not mine else 'ours with 8 heads'} vs {LABELS[name]}"
                 + (f" ({variant})" if variant else ""))
        lines.append(f"| {label} | {r['parameters']:.3f} | {_fmt(r['train'], '.2f')} | "
                     f"{_fmt(r['inference'], '.2f')} | {_fmt(r['sampling'], '.2f')} | "
                     f"{_fmt(r['memory'], '.2f')} |")
    return lines + _fastest_lines(res["models"])


def _fastest_lines(models: dict) -> list[str]:
    """With several variants: each network's fastest training step, ours against each peer's."""
    best = {}
    for key, rec in models.items():
        name = key.partition("/")[0]
        rate = rec.get("train_images_per_s")
        if rate and rate > best.get(name, (0, ""))[0]:
            best[name] = (rate, rec["variant"])
    if len({rec["variant"] for rec in models.values()}) < 2:
        return []
    lines = []
    for mine in (m for m in OURS if m in best):
        for peer in (p for p in best if p not in OURS):
            if mine == "ours_heads8" and peer != "diffusers":
                continue
            (o, ov), (p_, pv) = best[mine], best[peer]
            lines.append(f"* {LABELS[mine]} ({ov}, {o:.1f} images/s) vs {LABELS[peer]} "
                         f"({pv}, {p_:.1f} images/s): **{o / p_:.2f}x**")
    return ["", "Training, each network in its fastest variant:", ""] + lines if lines else []


def markdown_table(results: dict) -> str:
    """The results as Markdown: machine, one table per configuration, the ratios."""
    meta = results["meta"]
    s = meta["sampling"]
    basis = meta.get("ratio_basis", "wall")
    lines = _preamble(meta, results["skipped"])
    for config, res in results["configs"].items():
        lines += [f"**{config}: {res['title']}** (batch {res['batch']})", ""]
        sm = res["sampling"]
        if sm["scaled"]:
            lines += [f"Sampling: {sm['measured_images']} images with {sm['measured_steps']} DDIM "
                      f"steps were timed and the time scaled linearly to {s['reported_images']} "
                      f"images with {s['reported_steps']} steps.", ""]
        lines += _models_table(res, basis == "cpu", meta.get("matmul_flop_per_s")) + [""]
        flop = {rec["label"]: rec["train_flop"] for rec in res["models"].values()
                if rec.get("train_flop")}
        if flop:
            lines += [f"GFLOP per training step of batch {res['batch']} (forward and backward, "
                      "a multiply-add counts 2, counted by `torch.utils.flop_counter`): "
                      + "; ".join(f"{k} {v / 1e9:.1f}" for k, v in flop.items()) + ".", ""]
        lines += _build_lines(res) + [""]
        lines += _ratios_table(res, basis) + [""]
    return "\n".join(lines)


def plot_results(results: dict, path) -> None:
    """Bar chart of the ratios (ours vs each peer; above 1 = ours better), one panel per config."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    configs = [c for c, r in results["configs"].items() if r["ratios"]]
    panels = max(1, len(configs))
    # One panel per configuration, stacked, so the figure keeps the page's column width.
    fig, axes = plt.subplots(panels, 1, figsize=(7.5, 3.3 * panels), squeeze=False)
    kinds = ["train", "inference", "sampling", "memory"]
    for ax, config in zip(axes[:, 0], configs):
        basis = results["meta"].get("ratio_basis", "wall")
        rows = ratios(results["configs"][config]["models"], basis)
        width = 0.8 / max(1, len(rows))
        seen = []
        for i, (peer, r) in enumerate(rows.items()):
            xs = [k + (i - (len(rows) - 1) / 2) * width for k in range(len(kinds))]
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
    save_figure(fig, path)


