"""The command-line tail the measuring tools share: where results go and how they are shown.

A measuring tool (``tools.bench``, ``tools.sampler_sweep``) measures, writes a JSON results
file, renders it as a Markdown table and a figure, and can re-render both from a results file
without measuring again.  :func:`add_report_arguments` adds the options for that and
:func:`measure_and_report` carries them out, so both tools behave the same way.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch

__all__ = ["machine", "add_report_arguments", "measure_and_report", "save_figure"]


def machine() -> dict:
    """What the results were measured on: CPU model, core count, platform, Python, GPU."""
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


def add_report_arguments(parser, measuring: str = "measure", figure: str = "figure") -> None:
    """``--threads``, ``--out``, ``--markdown``, ``--plot`` and ``--from-json``."""
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--markdown", default=None, help="write the Markdown table here")
    parser.add_argument("--plot", default=None, help=f"write the {figure} (PNG) here")
    parser.add_argument("--from-json", default=None,
                        help=f"do not {measuring}: render --markdown/--plot from this file")


def measure_and_report(args, argv, prog: str, measure, markdown, plot) -> dict:
    """Measure (or read ``--from-json``), then write what the options ask for.

    ``measure()`` returns the results dict; ``markdown(results)`` the table as text;
    ``plot(results, path)`` writes the figure.  The command that produced a results file is
    recorded in it.  The table is printed when no ``--markdown`` file is asked for.
    """
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        results = measure()
        given = argv if argv is not None else sys.argv[1:]
        results["meta"]["command"] = f"python -m {prog} " + " ".join(given)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
            print(f"results written to {args.out}")
    if args.markdown:
        Path(args.markdown).write_text(markdown(results))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")  # a file, not a window: works without a display
        plot(results, args.plot)
    if not args.markdown:
        print(markdown(results))
    return results


def save_figure(fig, path) -> None:
    """Write ``fig`` as a PNG for the book's pages and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
