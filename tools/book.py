"""Maintain the book's notebooks: execute them in place, and check they are fit to publish.

``python -m tools.book execute [NOTEBOOK ...]`` runs every chapter in ``book/`` (or the ones
named) top to bottom in a fresh kernel and saves it with its outputs and widget state, which is
how the committed notebooks are produced.  Run it from the repository root; it uses the small
CPU budget unless ``UNET_EDU_FAST=0`` is set and a GPU is present.

``python -m tools.book check`` reports notebooks that the website cannot use as they are:
unexecuted or out-of-order cells, error outputs, widgets without saved state, absolute local
paths in outputs; and what a reader should not meet on a page.  In the cells' sources: test
markers (``# NBVAL_...`` comments: nbval reads cell tags instead), code lines longer than the
page's column (88 characters), references to texts the reader does not have.  In the saved
outputs: progress bars, bare ``True``/``False`` results, printed text split into several
stream outputs, Markdown tables printed as plain text.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

__all__ = ["chapter_notebooks", "execute_notebook", "merge_streams", "notebook_problems",
           "source_problems", "output_problems", "repository_root"]

LOCAL_PATH = re.compile(r"(?<![\w.])/(root|home|tmp|work|Users)/")
# The widest code line the page's column shows without cutting it off.
MAX_CODE_LINE = 88
# A comment that nbval reads as a marker; on the page it is noise (nbval reads cell tags too).
TEST_MARKER = re.compile(r"^\s*#\s*(NBVAL_\w+|PYTEST_VALIDATE_\w+)", re.M)
# Names for texts the reader does not have: the book checks their claims on the page
# "Claims we checked" and links there.  A random seed ("the same seed", "seed=0") is not one.
SOURCE_REFERENCE = re.compile(
    r"\bseeds?\s+0\d\d\b|\bthe seeds\b|\bseeds'|\bseed's\b|\bseed (document|text|file)s?\b"
    r"|\b\d{3}_[0-9a-f]{16}\.txt\b|\bthe seed\b(?!\s+(of|for|value|number|\d))", re.I)
PROGRESS_BAR = re.compile(r"\d+%\|")
PROGRESS_RATE = re.compile(r"\d(\.\d+)?\s*(it|s)/(s|it)\b")
MARKDOWN_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*\|", re.M)


def chapter_notebooks(root: Path | str = ".") -> list[Path]:
    """All notebooks under ``root/book`` (checkpoints and build output excluded)."""
    book = Path(root) / "book"
    return sorted(p for p in book.rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts and "_build" not in p.parts)


def execute_notebook(path: Path | str, timeout: int = 1200) -> float:
    """Execute ``path`` in place (outputs and widget state saved); return the seconds it took."""
    import os

    import nbformat
    from nbclient import NotebookClient

    # A saved notebook shows a one-line summary of each long loop, never a frozen progress bar.
    os.environ.setdefault("UNET_EDU_PROGRESS", "summary")
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    merge_streams(nb)
    nbformat.write(nb, path)
    return elapsed


def merge_streams(nb) -> None:
    """Join consecutive stream outputs of the same stream (stdout, stderr) in every cell.

    A kernel sends printed text in pieces as it is flushed; saved as they came, a table printed
    row by row becomes several outputs, and some viewers draw each one as a box of its own."""
    for cell in nb["cells"]:
        merged = []
        for out in cell.get("outputs", []):
            prev = merged[-1] if merged else None
            if (out.get("output_type") == "stream" and prev is not None
                    and prev.get("output_type") == "stream"
                    and prev.get("name") == out.get("name")):
                prev["text"] = _text(prev.get("text")) + _text(out.get("text"))
                continue
            merged.append(out)
        if "outputs" in cell:
            cell["outputs"] = merged


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else (value or "")


def notebook_problems(path: Path | str) -> list[str]:
    """What keeps a committed notebook from being shown as it is (empty list: nothing): the
    publishing problems of :func:`publishing_problems` and the reader-facing ones of
    :func:`source_problems` and :func:`output_problems`."""
    nb = json.loads(Path(path).read_text())
    return publishing_problems(nb) + source_problems(nb) + output_problems(nb)


def source_problems(nb: dict) -> list[str]:
    """What a reader would meet in the cells' sources: test markers, code lines wider than the
    column, references to texts the reader does not have.  These stay fixed until someone edits
    the notebook, whatever its outputs."""
    problems = []
    for i, cell in enumerate(nb["cells"]):
        src = _text(cell.get("source"))
        if cell["cell_type"] == "code":
            for marker in TEST_MARKER.findall(src):
                problems.append(f"cell {i}: test marker '# {marker}' in the code (use the cell tag "
                                f"'{marker.lower().replace('_', '-')}')")
            long = [n for n, line in enumerate(src.splitlines(), 1) if len(line) > MAX_CODE_LINE]
            if long:
                problems.append(f"cell {i}: {len(long)} code line(s) over {MAX_CODE_LINE} "
                                f"characters (line {', '.join(map(str, long))})")
            # comments are prose too
            text = "\n".join(line for line in src.splitlines() if "#" in line)
        else:
            text = src
        for match in SOURCE_REFERENCE.finditer(text):
            problems.append(f"cell {i}: refers to a text the reader does not have "
                            f"({match.group(0)!r}); link to the page 'Claims we checked'")
    return problems


def output_problems(nb: dict) -> list[str]:
    """What a reader would meet in the saved outputs: progress bars, bare True/False results,
    printed text split into several outputs, Markdown tables shown as plain text.  These change
    only when the notebook is executed again (``python -m tools.book execute``)."""
    problems = []
    for i, cell in enumerate(nb["cells"]):
        found, previous = [], None
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            data = out.get("data", {})
            plain = _text(data.get("text/plain"))
            text = _text(out.get("text")) if kind == "stream" else plain
            is_widget = "application/vnd.jupyter.widget-view+json" in data
            if is_widget and PROGRESS_BAR.search(plain):
                found.append("a saved progress bar")
            if kind == "stream" and (PROGRESS_BAR.search(text) or PROGRESS_RATE.search(text)):
                found.append("a saved progress bar")
            if (kind == "execute_result" and set(data) == {"text/plain"}
                    and plain.strip() in ("True", "False")):
                found.append(f"a bare {plain.strip()} result (end the cell with a statement, "
                             "or let the function return None)")
            if (kind == "stream" and previous is not None
                    and previous.get("output_type") == "stream"
                    and previous.get("name") == out.get("name")):
                found.append("printed text split into several outputs")
            if not is_widget and text and MARKDOWN_TABLE_RULE.search(text):
                found.append("a Markdown table printed as plain text (display it with "
                             "IPython.display.Markdown)")
            previous = out
        problems += [f"cell {i}: {what}" for what in dict.fromkeys(found)]
    return problems


def publishing_problems(nb: dict) -> list[str]:
    """What keeps the website from using a notebook: cells never executed or executed out of
    order, error outputs, absolute local paths in outputs, widgets without saved state."""
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
    state = (nb.get("metadata", {}).get("widgets", {})
             .get("application/vnd.jupyter.widget-state+json", {}))
    if uses_widgets and not state.get("state"):
        problems.append("widgets are displayed but no widget state is saved")
    return problems


def repository_root() -> Path:
    """The checkout this file belongs to (the folder with ``_toc.yml`` and ``book/``)."""
    return Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.book",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute", help="execute notebooks in place")
    ex.add_argument("notebooks", nargs="*", type=Path)
    ch = sub.add_parser("check", help="check committed notebooks")
    ch.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    here = Path.cwd()
    if not ((here / "_toc.yml").is_file() and (here / "book").is_dir()):
        print(f"python -m tools.book: run it from the repository root (the folder with _toc.yml "
              f"and book/), not from {here}: cd {repository_root()}", file=sys.stderr)
        return 2
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
