"""The stored sampler sweep of the shipped diffusion model: how few DDIM steps are enough?

The sweep (made by ``python -m tools.sampler_sweep`` in the repository) draws the same
class-balanced set of digits with 1,000-step DDPM and with DDIM at several step counts and
scores each set with :func:`unet_edu.metrics.evaluate_sampler`: Fréchet distance (FD) to real
test digits, label accuracy and wall time.  Its results are stored next to the model
(``digits-ddpm-sweep.json``) so that chapter 5 can show them in Colab without an hour of
sampling.  This module reads them, finds the fewest steps within a factor of DDPM's FD, and
renders the table and the figure.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["shipped_results", "fewest_steps_within", "markdown_table", "plot_sweep", "SHIPPED"]

SHIPPED = Path(__file__).resolve().parent / "digits-ddpm-sweep.json"


def shipped_results() -> dict:
    """The sweep of the shipped ``digits-ddpm`` model, as committed with the package."""
    if not SHIPPED.exists():
        raise FileNotFoundError(f"{SHIPPED.name} is missing; write it with "
                                f"python -m tools.sampler_sweep --out {SHIPPED}")
    return json.loads(SHIPPED.read_text())


def fewest_steps_within(results: dict, factor: float = 1.5) -> int | None:
    """The smallest DDIM step count whose FD is at most ``factor`` times DDPM's (None if none is)."""
    ddpm = [r for r in results["rows"] if r["sampler"] == "ddpm"]
    if not ddpm:
        return None
    limit = factor * ddpm[0]["fd"]
    ok = [r["steps"] for r in results["rows"] if r["sampler"] == "ddim" and r["fd"] <= limit]
    return min(ok) if ok else None


def markdown_table(results: dict, factor: float = 1.5) -> str:
    """The table of the appendix: one row per sampler setting, plus the real-data floor."""
    m = results["meta"]
    lines = [f"{m['n']} digits per row, guidance scale {m['guidance_scale']:g}, {m['device']} "
             f"({m['machine']['cpu']}, {m['threads']} threads), torch {m['torch']}, {m['date']}.", ""]
    if "model" in m:
        lines[0] += (f" Model: shipped `digits-ddpm` ({m['model']['training_steps']:,} training steps).")
    ddpm_fd = next((r["fd"] for r in results["rows"] if r["sampler"] == "ddpm"), None)
    lines += ["| sampler | network calls | FD | FD / DDPM's | label accuracy | seconds per image |",
              "|---|---:|---:|---:|---:|---:|",
              f"| two sets of real digits (floor) | – | {m['real_floor_fd']:.2f} | – | – | – |"]
    for r in results["rows"]:
        rel = f"{r['fd'] / ddpm_fd:.2f}" if ddpm_fd else "–"
        lines.append(f"| {r['sampler'].upper()} | {r['steps']:,} | {r['fd']:.2f} | {rel} | "
                     f"{r['label_accuracy']:.3f} | {r['seconds'] / r['n']:.4f} |")
    best = fewest_steps_within(results, factor)
    lines.append("")
    if ddpm_fd is None:
        lines.append("(No DDPM row: run without `--no-ddpm` to compare with it.)")
    elif best is None:
        lines.append(f"No DDIM step count in this sweep keeps the FD within {factor:g}x of DDPM's.")
    else:
        lines.append(f"**Fewest DDIM steps with an FD within {factor:g}x of 1000-step DDPM's: {best}.**")
    return "\n".join(lines) + "\n"


def plot_sweep(results: dict, ax=None, factor: float = 1.5):
    """FD against DDIM steps (both axes logarithmic): DDPM's FD, the ``factor`` band, the real floor.

    Draws on ``ax`` (a new figure when None) and returns it.
    """
    import matplotlib.pyplot as plt

    ddim = sorted((r for r in results["rows"] if r["sampler"] == "ddim"), key=lambda r: r["steps"])
    ddpm = next((r for r in results["rows"] if r["sampler"] == "ddpm"), None)
    if ax is None:
        ax = plt.figure(figsize=(6.4, 3.6)).gca()
    ax.plot([r["steps"] for r in ddim], [r["fd"] for r in ddim], "o-", label="DDIM")
    if ddpm is not None:
        ax.axhline(ddpm["fd"], color="C1", label=f"DDPM, {ddpm['steps']:,} steps")
        ax.axhspan(ddpm["fd"], factor * ddpm["fd"], color="C1", alpha=0.15,
                   label=f"within {factor:g}x of DDPM")
    ax.axhline(results["meta"]["real_floor_fd"], color="gray", ls="--", label="real vs real (floor)")
    ax.set_xscale("log")
    ax.set_xticks([r["steps"] for r in ddim], [str(r["steps"]) for r in ddim])
    ax.minorticks_off()
    ax.set_xlabel("DDIM steps (network calls)")
    # A log axis: the interesting gaps (floor, DDPM, the band) are small next to few-step DDIM.
    ax.set_yscale("log")
    ax.set_ylabel("Fréchet distance (log scale, lower is better)")
    ax.legend(fontsize=8)
    ax.set_title(f"sample quality against sampling steps ({results['meta']['n']} digits each)", fontsize=10)
    return ax
