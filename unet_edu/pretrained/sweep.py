"""The stored sampler sweep of the shipped diffusion model: how few DDIM steps are enough?

The sweep (made by ``python -m tools.sampler_sweep`` in the repository) draws the same
class-balanced set of digits with 1,000-step DDPM and with DDIM at several step counts and
scores each set with :func:`unet_edu.metrics.evaluate_sampler`: Fréchet distance (FD) to real
test digits, label accuracy and wall time.  Its results are stored next to the model
(``digits-ddpm-sweep.json``; a sweep over the guidance scale in ``digits-ddpm-guidance.json``)
so that chapter 5 can show them in Colab without an hour of sampling.  This module reads them,
finds the fewest steps within a factor of DDPM's FD, and renders the tables and the figures.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["shipped_results", "fewest_steps_within", "markdown_table", "guidance_table",
           "plot_sweep", "plot_guidance", "eta_of", "SHIPPED", "SHIPPED_GUIDANCE"]

SHIPPED = Path(__file__).resolve().parent / "digits-ddpm-sweep.json"
SHIPPED_GUIDANCE = Path(__file__).resolve().parent / "digits-ddpm-guidance.json"


def shipped_results(which: str = "steps") -> dict:
    """A stored sweep of the shipped ``digits-ddpm`` model, as committed with the package.

    ``which="steps"``: DDPM and DDIM at several step counts and spacings (guidance 2);
    ``which="guidance"``: DDIM at several guidance scales.  The file is checked against its
    checksum (:func:`unet_edu.pretrained.verify`); a truncated or foreign one is a
    ``ValueError`` that names it and the command that writes it.
    """
    from . import verify

    paths = {"steps": SHIPPED, "guidance": SHIPPED_GUIDANCE}
    if which not in paths:
        raise ValueError(f"which must be 'steps' or 'guidance', got {which!r}")
    path = paths[which]
    remake = f"write it with python -m tools.sampler_sweep --out {path} (see that module's help)"
    if not path.exists():
        raise FileNotFoundError(f"{path.name} is missing; {remake}")
    verify(path)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:  # a JSONDecodeError or bytes that are not text
        raise ValueError(f"cannot read the stored sweep {path} (truncated or not JSON: "
                         f"{err}); {remake}") from err
    rows = results.get("rows") if isinstance(results, dict) else None
    if not isinstance(rows, list) or not isinstance(results.get("meta"), dict) or not all(
            isinstance(r, dict) for r in rows):
        raise ValueError(f"{path} is not a sweep (a dict with 'meta' and a list of 'rows'); "
                         f"{remake}")
    return results


def _is_guidance_sweep(results: dict) -> bool:
    return len(results["meta"].get("guidance_scales", [results["meta"]["guidance_scale"]])) > 1


def _default_spacing(row: dict, results: dict) -> bool:
    """A DDIM row at the sweep's main spacing (rows of older files carry no spacing)."""
    return row.get("spacing") in (None, results.get("meta", {}).get("spacing"))


def eta_of(row: dict) -> float | None:
    """DDIM's eta of a row (rows written before eta was swept are eta = 0); None for DDPM."""
    return None if row["sampler"] == "ddpm" else float(row.get("eta") or 0.0)


def _fd(row_or_meta: dict, key: str = "fd") -> str:
    sd = row_or_meta.get(f"{key}_sd")
    return f"{row_or_meta[key]:.2f}" + (f" ± {sd:.2f}" if sd is not None else "")


def fewest_steps_within(results: dict, factor: float = 1.5, eta: float = 0.0) -> int | None:
    """The smallest DDIM step count (at the sweep's main spacing and ``eta``) whose FD is at
    most ``factor`` times DDPM's; None if none is or there is no DDPM row."""
    ddpm = [r for r in results["rows"] if r["sampler"] == "ddpm"]
    if not ddpm:
        return None
    limit = factor * ddpm[0]["fd"]
    ok = [r["steps"] for r in results["rows"]
          if r["sampler"] == "ddim" and _default_spacing(r, results) and eta_of(r) == eta
          and r["fd"] <= limit]
    return min(ok) if ok else None


def _header(results: dict) -> str:
    m = results["meta"]
    line = (f"{m['n']} digits per row, {m['device']} ({m['machine']['cpu']}, {m['threads']} "
            f"threads), torch {m['torch']}, {m['date']}.")
    if "model" in m:
        line += f" Model: shipped `digits-ddpm` ({m['model']['training_steps']:,} training steps)."
    if any(r.get("fd_sd") is not None for r in results["rows"]):
        line += (" FD ± its bootstrap standard deviation (200 redraws of the generated set).")
    if any(r.get("fd_sd_with_real") is not None for r in results["rows"]):
        line += (" \"sd, real redrawn\": the same with the real digits redrawn too, the spread "
                 "of an FD on its own.")
    # Rows carried over from an earlier run (``--reuse``) keep the day they were sampled on;
    # rows labelled in the table itself (``reused_from``) are not counted here.
    carried: dict = {}
    for r in results["rows"]:
        day = r.get("sampled_on")
        if day and day != m["date"] and not r.get("reused_from"):
            key = (day, r.get("sampled_on_cpu"))
            carried[key] = carried.get(key, 0) + 1
    for (day, cpu), n in sorted(carried.items(), key=lambda kv: str(kv[0])):
        line += (f" {n} row{'s' if n > 1 else ''} carried over from the run of {day}"
                 + (f" (on {cpu})" if cpu and cpu != m["machine"]["cpu"] else "") + ".")
    return line


def markdown_table(results: dict, factor: float = 1.5) -> str:
    """The sweep as a Markdown table: samplers and steps, or guidance scales."""
    if _is_guidance_sweep(results):
        return guidance_table(results)
    m = results["meta"]
    lines = [_header(results) + f" Guidance scale {m['guidance_scale']:g}.", ""]
    ddpm_fd = next((r["fd"] for r in results["rows"] if r["sampler"] == "ddpm"), None)
    with_real = any(r.get("fd_sd_with_real") is not None for r in results["rows"])
    lines += ["| sampler | spacing | η | network calls | FD | "
              + ("sd, real redrawn | " if with_real else "")
              + "FD / DDPM's | label accuracy | seconds per image |",
              "|---|---|---:|---:|---:|" + ("---:|" if with_real else "") + "---:|---:|---:|",
              f"| two sets of real digits (floor) | – | – | – | {_fd(m, 'real_floor_fd')} | "
              + ("– | " if with_real else "") + "– | – | – |"]
    for r in results["rows"]:
        rel = f"{r['fd'] / ddpm_fd:.2f}" if ddpm_fd else "–"
        spacing = r.get("spacing") or ("–" if r["sampler"] == "ddpm" else m.get("spacing", "linspace"))
        name = r["sampler"].upper()
        if r.get("reused_from"):  # carried over from an earlier sweep: its time is that day's
            cpu = r.get("sampled_on_cpu")
            other = cpu and cpu != m.get("machine", {}).get("cpu")
            name += f" (sampled {r['reused_from']}" + (f" on {cpu})" if other else ")")
        eta = "–" if eta_of(r) is None else f"{eta_of(r):g}"
        sd_real = r.get("fd_sd_with_real")
        extra = (f"{sd_real:.2f} | " if sd_real is not None else "– | ") if with_real else ""
        lines.append(f"| {name} | {spacing} | {eta} | {r['steps']:,} | {_fd(r)} | {extra}{rel} | "
                     f"{r['label_accuracy']:.3f} | {r['seconds'] / r['n']:.4f} |")
    best = fewest_steps_within(results, factor)
    lines.append("")
    if ddpm_fd is None:
        lines.append("(No DDPM row: run without `--no-ddpm` to compare with it.)")
    elif best is None:
        lines.append(f"No DDIM step count in this sweep keeps the FD within {factor:g}x of DDPM's.")
    else:
        lines.append(f"**Fewest DDIM steps (η = 0) with an FD within {factor:g}x of 1000-step "
                     f"DDPM's: {best}.**")
    return "\n".join(lines) + "\n"


def guidance_table(results: dict) -> str:
    """A guidance sweep as a Markdown table: FD, label accuracy and within-class variety per scale."""
    m = results["meta"]
    rows = sorted(results["rows"], key=lambda r: r["guidance_scale"])
    r0 = rows[0]
    lines = [_header(results) + f" Sampler: {r0['sampler'].upper()}-{r0['steps']}"
             + (f", {r0['spacing']} spacing." if r0.get("spacing") else "."), "",
             "| guidance scale s | w = s - 1 | FD | label accuracy | within-class variety |",
             "|---:|---:|---:|---:|---:|",
             f"| real digits | – | {_fd(m, 'real_floor_fd')} | – | {m['real_variety']:.2f} |"]
    for r in rows:
        lines.append(f"| {r['guidance_scale']:g} | {r['guidance_scale'] - 1:g} | {_fd(r)} | "
                     f"{r['label_accuracy']:.3f} | {r['variety']:.2f} |")
    return "\n".join(lines) + "\n"


def plot_sweep(results: dict, ax=None, factor: float = 1.5):
    """FD against DDIM steps (both axes logarithmic), one line per spacing, with DDPM's FD, the
    ``factor`` band and the real floor.  A guidance sweep is drawn by :func:`plot_guidance`.

    Draws on ``ax`` (a new figure when None) and returns it.
    """
    import matplotlib.pyplot as plt

    if _is_guidance_sweep(results):
        return plot_guidance(results, ax=ax)
    main = results["meta"].get("spacing", "linspace")
    ddpm = next((r for r in results["rows"] if r["sampler"] == "ddpm"), None)
    if ax is None:
        ax = plt.figure(figsize=(6.4, 3.6)).gca()
    ddim = [r for r in results["rows"] if r["sampler"] == "ddim"]
    lines = sorted({(r.get("spacing") or main, eta_of(r)) for r in ddim},
                   key=lambda k: (k[0] != main, k[0], k[1]))
    all_steps = set()
    for k, (sp, eta) in enumerate(lines):
        rows = sorted((r for r in ddim if (r.get("spacing") or main, eta_of(r)) == (sp, eta)),
                      key=lambda r: r["steps"])
        all_steps |= {r["steps"] for r in rows}
        label = f"DDIM, {sp} spacing" + (f", η = {eta:g}" if eta else "")
        ax.errorbar([r["steps"] for r in rows], [r["fd"] for r in rows],
                    yerr=[r.get("fd_sd") or 0 for r in rows], fmt="o-" if k == 0 else "s--",
                    capsize=3, color=f"C{0 if k == 0 else k + 1}", label=label)
    if ddpm is not None:
        ax.axhline(ddpm["fd"], color="C1", label=f"DDPM, {ddpm['steps']:,} steps")
        ax.axhspan(ddpm["fd"], factor * ddpm["fd"], color="C1", alpha=0.15,
                   label=f"within {factor:g}x of DDPM")
    ax.axhline(results["meta"]["real_floor_fd"], color="gray", ls="--", label="real vs real (floor)")
    ax.set_xscale("log")
    ax.set_xticks(sorted(all_steps), [str(s) for s in sorted(all_steps)])
    ax.minorticks_off()
    ax.set_xlabel("DDIM steps (network calls)")
    # A log axis: the interesting gaps (floor, DDPM, the band) are small next to few-step DDIM.
    ax.set_yscale("log")
    ax.set_ylabel("Fréchet distance (log scale)")
    ax.legend(fontsize=8)
    ax.set_title(f"sample quality against sampling steps ({results['meta']['n']} digits each, "
                 "lower is better)", fontsize=10)
    return ax


def plot_guidance(results: dict, ax=None):
    """FD (left axis) and within-class variety (right axis) against the guidance scale, with
    the real digits' variety as a reference line.  Returns the left axis."""
    import matplotlib.pyplot as plt

    if ax is None:
        ax = plt.figure(figsize=(6.4, 3.4)).gca()
    rows = sorted(results["rows"], key=lambda r: r["guidance_scale"])
    s = [r["guidance_scale"] for r in rows]
    ax.errorbar(s, [r["fd"] for r in rows], yerr=[r.get("fd_sd") or 0 for r in rows], fmt="o-",
                capsize=3, color="C0", label="FD (lower is better)")
    ax.set_xlabel("guidance scale s")
    ax.set_ylabel("Fréchet distance", color="C0")
    ax.set_yscale("log")
    right = ax.twinx()
    right.plot(s, [r["variety"] for r in rows], "s--", color="C3", label="within-class variety")
    right.axhline(results["meta"]["real_variety"], color="C3", ls=":", label="real digits' variety")
    right.set_ylabel("within-class variety", color="C3")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper center")
    ax.set_title(f"guidance: quality and variety ({results['meta']['n']} digits each)", fontsize=10)
    return ax
