"""Maintain the book's notebooks: execute them in place, and check they are fit to publish.

``python -m tools.book execute [NOTEBOOK ...]`` runs every chapter in ``book/`` (or the ones
named) top to bottom in a fresh kernel and saves it with its outputs and widget state, which is
how the committed notebooks are produced.  Run it from the repository root; it uses the small
CPU budget unless ``UNET_EDU_FAST=0`` is set and a GPU is present.

``python -m tools.book check`` reports notebooks that the website cannot use as they are:
unexecuted or out-of-order cells, error outputs, widgets without saved state, absolute local
paths in outputs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

__all__ = ["chapter_notebooks", "execute_notebook", "notebook_problems"]

LOCAL_PATH = re.compile(r"(?<![\w.])/(root|home|tmp|work|Users)/")


def chapter_notebooks(root: Path | str = ".") -> list[Path]:
    """All notebooks under ``root/book`` (checkpoints and build output excluded)."""
    book = Path(root) / "book"
    return sorted(p for p in book.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and "_build" not in p.parts)


def execute_notebook(path: Path | str, timeout: int = 1200) -> float:
    """Execute ``path`` in place (outputs and widget state saved); return the seconds it took."""
    import nbformat
    from nbclient import NotebookClient

    import os

    # A saved notebook shows a one-line summary of each long loop, never a frozen progress bar.
    os.environ.setdefault("UNET_EDU_PROGRESS", "summary")
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    nbformat.write(nb, path)
    return elapsed


def notebook_problems(path: Path | str) -> list[str]:
    """What keeps a committed notebook from being shown as it is (empty list: nothing)."""
    path = Path(path)
    nb = json.loads(path.read_text())
    problems = []
    counts = [c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"]
    if any(c is None for c in counts):
        problems.append(f"{sum(c is None for c in counts)} code cell(s) never executed")
    elif counts != sorted(counts) or len(set(counts)) != len(counts):
        problems.append("cells executed out of order")
    uses_widgets = False
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"cell {i}: error output {out.get('ename')}")
            if "application/vnd.jupyter.widget-view+json" in out.get("data", {}):
                uses_widgets = True
            if LOCAL_PATH.search(json.dumps(out)):
                problems.append(f"cell {i}: an output shows an absolute local path")
    state = nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    if uses_widgets and not state.get("state"):
        problems.append("widgets are displayed but no widget state is saved")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.book", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute", help="execute notebooks in place")
    ex.add_argument("notebooks", nargs="*", type=Path)
    ch = sub.add_parser("check", help="check committed notebooks")
    ch.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    notebooks = args.notebooks or chapter_notebooks()
    if args.command == "execute":
        for nb in notebooks:
            print(f"executing {nb} ...", flush=True)
            print(f"  done in {execute_notebook(nb):.0f} s", flush=True)
        return 0
    bad = 0
    for nb in notebooks:
        for problem in notebook_problems(nb):
            print(f"{nb}: {problem}")
            bad += 1
    print(f"{len(notebooks)} notebook(s) checked, {bad} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
