"""Maintain the book's notebooks: execute them in place, and check they are fit to publish.

``python -m tools.book execute [--allow-dirty] [NOTEBOOK ...]`` runs every chapter in ``book/``
(or the ones named) top to bottom in a fresh kernel and saves it with its outputs and widget
state, which is how the committed notebooks are produced.  Run it from the repository root; it
uses the small CPU budget unless ``UNET_EDU_FAST=0`` is set and a GPU is present.  Before
executing, it writes the current commit into the pip line of each chapter's first cell
(``git+https://github.com/unet-edu/unet-edu@<commit>``), so that a Colab reader installs the
package the page was executed with, not whatever the main branch holds by then.  It refuses
while ``unet_edu/`` or ``pyproject.toml`` has uncommitted changes (the commit would not hold
the package that ran); ``--allow-dirty`` executes anyway, stamping HEAD, with a warning.

``python -m tools.book check`` reports notebooks that the website cannot use as they are:
unexecuted or out-of-order cells, error outputs, widgets without saved state, absolute local
paths in outputs; a first cell whose stamped commit is not in the history of HEAD, or whose
package differs from HEAD's; and what a reader should not meet on a page.  In the cells'
sources: test markers (``# NBVAL_...`` comments: nbval reads cell tags instead), code lines
longer than the page's column (76 characters), references to texts the reader does not have,
commands and private functions that only a clone of the repository has (``python -m
tools...``, ``experiments._...``), check cells (cells that call ``check_claim``) without the
``hide-input`` tag.  In the saved outputs: progress bars, bare ``True``/``False`` results,
printed text split into several stream outputs, tables printed as plain text, text lines
longer than the column, check cells that show no verdict line.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["chapter_notebooks", "execute_notebook", "merge_streams", "notebook_problems",
           "source_problems", "output_problems", "publishing_problems", "repository_root",
           "package_url", "package_state", "stamp_install", "stamped_ref", "stamp_problems"]

LOCAL_PATH = re.compile(r"(?<![\w.])/(root|home|tmp|work|Users)/")
# The widest code line the page's column shows without a scroll bar (the page style fits 76
# monospace characters into the column of a 1280-pixel window), and the widest printed line.
MAX_CODE_LINE = 76
MAX_OUTPUT_LINE = 76
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
# What only a clone of the repository has: its maintenance commands and the package's private
# functions.  A Colab reader has neither, so a chapter must not ask for them.
REPOSITORY_ONLY = re.compile(r"\bpython3?\s+-m\s+tools(?:\.\w+)*|\bexperiments\._\w+")
CHECK_CALL = re.compile(r"\bcheck_claim\s*\(")
FOLDED = {"hide-input", "remove-input"}
# Columns of a table printed as text: a gap of two or more spaces between two words.
COLUMN_GAP = re.compile(r"(?<=\S) {2,}(?=\S)")


def chapter_notebooks(root: Path | str = ".") -> list[Path]:
    """All notebooks under ``root/book`` (checkpoints and build output excluded)."""
    book = Path(root) / "book"
    return sorted(p for p in book.rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts and "_build" not in p.parts)


def execute_notebook(path: Path | str, timeout: int = 1200, stamp: str | None = None,
                     url: str | None = None) -> float:
    """Execute ``path`` in place (outputs and widget state saved); return the seconds it took.

    With ``stamp`` (a commit) and ``url`` (the repository's address), the pip line of the first
    code cell is pointed at that commit first (:func:`stamp_install`)."""
    import os

    import nbformat
    from nbclient import NotebookClient

    # A saved notebook shows a one-line summary of each long loop, never a frozen progress bar.
    os.environ.setdefault("UNET_EDU_PROGRESS", "summary")
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if stamp is not None:
        stamp_install(nb, stamp, url)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    merge_streams(nb)
    nbformat.write(nb, path)
    return elapsed


# ---- The commit a chapter's first cell installs ----------------------------------------------

PACKAGE_PATHS = ("unet_edu", "pyproject.toml")  # what a pip install of the repository takes
COMMIT = re.compile(r"[0-9a-f]{40}")


def package_url(root: Path | str = ".") -> str:
    """The repository's address, from ``_config.yml`` (``repository.url``)."""
    import yaml

    config = yaml.safe_load((Path(root) / "_config.yml").read_text())
    return str(config["repository"]["url"]).rstrip("/")


def _install_pattern(url: str) -> re.Pattern:
    # git+<url>[.git][@ref], as pip reads it; the ref ends at a quote, a space or a bracket.
    # The ref may start a second string literal on the next line ("git+<url>"\n "@<ref>"):
    # Python joins the two, and the 40-character commit then fits the page's column.
    return re.compile(r"git\+" + re.escape(url) + r"(?:\.git)?"
                      r"(?:(?P<sep>\"\s*\")?@(?P<ref>[^\s\"'\]\)#]+))?")


def _first_code_cell(nb) -> dict | None:
    return next((c for c in nb["cells"] if c["cell_type"] == "code"), None)


def stamped_ref(nb, url: str) -> str | None:
    """What the pip line of the first code cell installs: the text after ``@`` (a commit, a
    branch), ``""`` when it names no ref, None when the cell installs no ``git+url``."""
    cell = _first_code_cell(nb)
    match = _install_pattern(url).search(_text(cell["source"])) if cell is not None else None
    if match is None:
        return None
    return match.group("ref") or ""


def stamp_install(nb, commit: str, url: str) -> bool:
    """Point the pip line of the first code cell at ``commit`` (``git+<url>@<commit>``); return
    whether the source changed.  Raises ValueError when that cell installs no ``git+<url>``."""
    if not COMMIT.fullmatch(commit):
        raise ValueError(f"stamp with a full 40-character commit, got {commit!r}")
    cell = _first_code_cell(nb)
    src = _text(cell["source"]) if cell is not None else ""
    pattern = _install_pattern(url)
    if not pattern.search(src):
        raise ValueError(f"the first code cell has no 'git+{url}' to pin to commit {commit[:12]}")
    new = pattern.sub(lambda m: f"git+{url}{m.group('sep') or ''}@{commit}", src)
    cell["source"] = new
    return new != src


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)


def package_state(root: Path | str = ".") -> tuple[str | None, list[str]]:
    """``(HEAD's commit, [uncommitted paths of the package])``: the commit is None outside a git
    checkout; the list names files under ``unet_edu/`` or ``pyproject.toml`` that differ from
    HEAD, untracked ones included (a pip install of the commit would not have them)."""
    root = Path(root)
    head = _git(root, "rev-parse", "--verify", "HEAD")
    if head.returncode != 0:
        return None, []
    status = _git(root, "status", "--porcelain", "--untracked-files=all", "--", *PACKAGE_PATHS)
    dirty = [line[3:] for line in status.stdout.splitlines() if line.strip()]
    return head.stdout.strip(), dirty


def stamp_problems(nb, root: Path | str = ".", url: str | None = None) -> list[str]:
    """Whether the first cell's pip line installs the package this page was executed with: a
    commit (not a branch) that is in the history of HEAD and whose ``unet_edu/`` is HEAD's.
    Empty list: it does."""
    root = Path(root)
    url = url or package_url(root)
    ref = stamped_ref(nb, url)
    if ref is None:
        return [f"the first code cell does not install the package (git+{url}@<commit>)"]
    if not COMMIT.fullmatch(ref):
        return [f"the first code cell installs {ref or 'the default branch'!s}, not the commit "
                f"the page was executed with (python -m tools.book execute stamps it)"]
    if _git(root, "cat-file", "-e", f"{ref}^{{commit}}").returncode != 0:
        return [f"the first code cell installs commit {ref[:12]}, which this clone does not have"]
    if _git(root, "merge-base", "--is-ancestor", ref, "HEAD").returncode != 0:
        return [f"the first code cell installs commit {ref[:12]}, which is not in the history "
                f"of HEAD (a commit from another branch, or one rewritten since)"]
    changed = _git(root, "diff", "--name-only", ref, "HEAD", "--", "unet_edu").stdout.split()
    if changed:
        return [f"the package changed since commit {ref[:12]}, which the first cell installs "
                f"({len(changed)} file(s) under unet_edu/, e.g. {changed[0]}): execute the "
                f"chapter again"]
    return []


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
    column, references to texts the reader does not have, commands and private functions that
    only a clone of the repository has, check cells whose code is not folded away.  These stay
    fixed until someone edits the notebook, whatever its outputs."""
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
            tags = set(cell.get("metadata", {}).get("tags", []))
            if CHECK_CALL.search(src) and not tags & FOLDED:
                problems.append(f"cell {i}: a check cell (it calls check_claim) without the "
                                f"'hide-input' tag: the reader should see the verdict, with the "
                                f"code folded")
            # comments are prose too
            text = "\n".join(line for line in src.splitlines() if "#" in line)
        else:
            text = src
        for match in SOURCE_REFERENCE.finditer(text):
            problems.append(f"cell {i}: refers to a text the reader does not have "
                            f"({match.group(0)!r}); link to the page 'Claims we checked'")
        for found in dict.fromkeys(m.group(0) for m in REPOSITORY_ONLY.finditer(src)):
            problems.append(f"cell {i}: {_repository_only(found)}")
    return problems


def _repository_only(found: str) -> str:
    if found.startswith("experiments."):
        return (f"uses {found!r}, a private function of the package (a reader cannot rely on "
                f"it): make it public or show what it does")
    return (f"shows {' '.join(found.split())!r}, a command that only a clone of the repository "
            f"has (a Colab reader has the package alone): say what it does, or leave it to the "
            f"README")


def output_problems(nb: dict) -> list[str]:
    """What a reader would meet in the saved outputs: progress bars, bare True/False results,
    printed text split into several outputs, tables printed as plain text, text lines wider
    than the column, commands only a clone has, check cells without their verdict line.  These change only when the notebook is
    executed again (``python -m tools.book execute``)."""
    problems = []
    for i, cell in enumerate(nb["cells"]):
        found, previous = [], None
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            data = out.get("data", {})
            plain = _text(data.get("text/plain"))
            text = _text(out.get("text")) if kind == "stream" else plain
            is_widget = "application/vnd.jupyter.widget-view+json" in data
            # What the page shows of an output: text/plain only when nothing richer comes with it.
            shown_as_text = kind == "stream" or (kind in ("execute_result", "display_data")
                                                 and set(data) == {"text/plain"})
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
            elif shown_as_text and text and _printed_table(text):
                found.append("a table printed as text in aligned columns (display it as a "
                             "table: IPython.display.Markdown, or an HTML table)")
            if shown_as_text and text:
                long = [line for line in text.splitlines() if len(line) > MAX_OUTPUT_LINE]
                if long:
                    found.append(f"{len(long)} printed line(s) over {MAX_OUTPUT_LINE} "
                                 f"characters (the longest {max(map(len, long))}): they "
                                 f"scroll sideways on the page")
            for match in REPOSITORY_ONLY.finditer(text if shown_as_text else ""):
                found.append(_repository_only(match.group(0)))
            previous = out
        if (cell["cell_type"] == "code" and CHECK_CALL.search(_text(cell.get("source")))
                and not any('class="unet-check"' in _text(o.get("data", {}).get("text/html"))
                            for o in cell.get("outputs", []))):
            found.append("a check cell that shows no verdict line (check_claim displays "
                         "'✓ checked: ...' as HTML; execute the chapter again)")
        problems += [f"cell {i}: {what}" for what in dict.fromkeys(found)]
    return problems


def _printed_table(text: str, rows: int = 3) -> bool:
    """Whether ``text`` holds a table laid out with spaces: ``rows`` or more consecutive lines
    with two or more column gaps each, sharing at least two column edges (a left edge where
    text starts, or a right edge where numbers end, at the same position in every line).  Source code, tensors and arrays (lines in brackets)
    do not count."""
    def starts(line: str) -> set[int] | None:
        stripped = line.strip()
        if (not stripped or stripped[0] in "[(" or stripped.startswith(("def ", "class "))
                or "tensor(" in stripped or line.startswith(("    ", "\t"))):
            return None
        gaps = list(COLUMN_GAP.finditer(line))
        if len(gaps) < 2:
            return None
        # a column lines up by its left edge (text) or by its right edge (numbers)
        return ({("left", m.end()) for m in gaps} | {("right", m.start()) for m in gaps}
                | {("right", len(line.rstrip()))})

    block: list[set] = []
    for line in text.splitlines() + [""]:
        cols = starts(line)
        if cols is not None:
            block.append(cols)
            continue
        if len(block) >= rows and len(set.intersection(*block)) >= 2:
            return True
        block = []
    return False


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
    # A saved widget that refers to one the state lacks breaks its explorer on the page
    # ("widget model not found"): a state message was lost while executing; execute again.
    saved = state.get("state", {})
    lost = {ref for m in saved.values()
            for ref in re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(m.get("state", {})))
            if ref not in saved}
    if lost:
        problems.append(f"the saved widget state refers to {len(lost)} widget(s) it does not "
                        f"hold: execute the chapter again")
    return problems


def repository_root() -> Path:
    """The checkout this file belongs to (the folder with ``_toc.yml`` and ``book/``)."""
    return Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.book",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute", help="execute notebooks in place, stamping the commit")
    ex.add_argument("notebooks", nargs="*", type=Path)
    ex.add_argument("--allow-dirty", action="store_true",
                    help="execute although unet_edu/ or pyproject.toml has uncommitted changes "
                         "(the pages then install HEAD, which is not what ran)")
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
        return _execute(notebooks, here, args.allow_dirty)
    commit, _ = package_state(here)
    if commit is None:
        print("not a git checkout: the commits the chapters install are not checked")
    bad = 0
    for nb in notebooks:
        data = json.loads(Path(nb).read_text())
        problems = notebook_problems(nb) + (stamp_problems(data, here) if commit else [])
        for problem in problems:
            print(f"{nb}: {problem}")
            bad += 1
    print(f"{len(notebooks)} notebook(s) checked, {bad} problem(s)")
    return 1 if bad else 0


def _execute(notebooks, root: Path, allow_dirty: bool) -> int:
    commit, dirty = package_state(root)
    if commit is None or dirty:
        why = ("this is not a git checkout, so no commit can name the package" if commit is None
               else f"the package has uncommitted changes ({', '.join(dirty[:5])}"
                    f"{', ...' if len(dirty) > 5 else ''}), so no commit holds what would run")
        if not allow_dirty:
            print(f"python -m tools.book execute: refusing: {why}.  Commit them first (the "
                  f"chapters' first cell will install that commit), or pass --allow-dirty.",
                  file=sys.stderr)
            return 2
        print(f"WARNING: {why}; executing anyway"
              + (f", and the pages will install {commit[:12]} (HEAD), which is NOT the package "
                 f"that ran: execute again once it is committed" if commit else
                 "; the pip lines are left as they are"), file=sys.stderr, flush=True)
    url = package_url(root)
    for nb in notebooks:
        print(f"executing {nb} ...", flush=True)
        seconds = execute_notebook(nb, stamp=commit, url=url)
        print(f"  done in {seconds:.0f} s; its first cell installs "
              f"{commit[:12] if commit else 'what it named before'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
