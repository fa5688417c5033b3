"""The website builds without warnings, and the committed notebooks are fit to publish."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from tools.book import (MAX_CODE_LINE, chapter_notebooks, merge_streams, output_problems,
                        publishing_problems, source_problems)

ROOT = Path(__file__).resolve().parents[1]


def _load(notebook):
    return json.loads(notebook.read_text())


@pytest.mark.parametrize("notebook", chapter_notebooks(ROOT), ids=lambda p: p.name)
def test_committed_notebook_is_publishable(notebook):
    assert publishing_problems(_load(notebook)) == []


@pytest.mark.parametrize("notebook", chapter_notebooks(ROOT), ids=lambda p: p.name)
def test_committed_notebook_sources_are_clean_for_readers(notebook):
    # Test markers, code wider than the column, references to texts readers do not have.
    # (The output checks, output_problems, are run by `python -m tools.book check`.)
    assert source_problems(_load(notebook)) == []


def _stream(text):
    return new_output("stream", name="stdout", text=text)


def test_the_scan_reports_every_kind_of_problem_a_reader_would_meet():
    nb = new_notebook(cells=[
        new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(1)"),
        new_code_cell("x = " + "1 + " * 30 + "1"),
        new_markdown_cell("Seed 003 (§4.2) says so, and the seeds' advice agrees."),
        new_code_cell("check()", outputs=[new_output("execute_result", data={"text/plain": "True"},
                                                     execution_count=1)]),
        new_code_cell("table()", outputs=[_stream("a | b\n"), _stream("1 | 2\n")]),
        new_code_cell("train()", outputs=[_stream("loss: 100%|##########| 50/50 [00:03, 14.2it/s]\n")]),
        new_code_cell("show()", outputs=[_stream("| a | b |\n|---|---|\n| 1 | 2 |\n")]),
    ])
    nb = json.loads(nbformat.writes(nb))
    source = source_problems(nb)
    assert any("cell 0" in p and "nbval-check-output" in p for p in source)
    assert any("cell 1" in p and f"over {MAX_CODE_LINE}" in p for p in source)
    assert sum("cell 2" in p and "does not have" in p for p in source) == 2
    outputs = output_problems(nb)
    assert any("cell 3" in p and "bare True" in p for p in outputs)
    assert any("cell 4" in p and "split" in p for p in outputs)
    assert any("cell 5" in p and "progress bar" in p for p in outputs)
    assert any("cell 6" in p and "Markdown table" in p for p in outputs)


def test_the_scan_passes_clean_cells_and_random_seeds():
    nb = new_notebook(cells=[
        new_markdown_cell("The same seed gives the same images; three seeds each; the seed of "
                          "the generator."),
        new_code_cell("gen = seed_everything(0)  # the seed 0", outputs=[_stream("a\nb\n")]),
    ])
    nb = json.loads(nbformat.writes(nb))
    assert source_problems(nb) == [] and output_problems(nb) == []


def test_merge_streams_joins_only_neighbours_of_the_same_stream():
    nb = {"cells": [{"cell_type": "code", "outputs": [
        _stream("a\n"), _stream(["b\n"]), new_output("stream", name="stderr", text="w\n"),
        _stream("c\n")]}]}
    merge_streams(nb)
    outs = nb["cells"][0]["outputs"]
    assert [(o["name"], o["text"]) for o in outs] == [("stdout", "a\nb\n"), ("stderr", "w\n"),
                                                      ("stdout", "c\n")]


def test_check_run_outside_the_repository_root_says_where_to_run_it(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tools.book", "check"], cwd=tmp_path,
                         capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    assert out.returncode == 2
    assert "repository root" in out.stderr and str(ROOT) in out.stderr


def test_every_chapter_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    for nb in chapter_notebooks(ROOT):
        assert f"file: {nb.relative_to(ROOT).with_suffix('').as_posix()}" in toc, nb


def test_book_builds_without_warnings(built_site):
    assert built_site["returncode"] == 0, built_site["log"]
    assert (built_site["html"] / "book" / "intro.html").exists()


@pytest.mark.parametrize("notebook", chapter_notebooks(ROOT), ids=lambda p: p.name)
def test_first_code_cell_installs_the_package_for_colab(notebook):
    cells = [c for c in _load(notebook)["cells"] if c["cell_type"] == "code"]
    first = "".join(cells[0]["source"])
    assert 'find_spec("unet_edu") is None' in first, \
        "the first cell must install unet_edu only when it is missing"
    assert "git+https://github.com/unet-edu/unet-edu@main" in first
    assert "device()" in first and "budget()" in first
