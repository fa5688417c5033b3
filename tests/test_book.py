"""The website builds without warnings, and the committed notebooks are fit to publish."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from unet_edu.book import chapter_notebooks, notebook_problems

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("notebook", chapter_notebooks(ROOT), ids=lambda p: p.name)
def test_committed_notebook_is_publishable(notebook):
    assert notebook_problems(notebook) == []


def test_every_chapter_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    for nb in chapter_notebooks(ROOT):
        assert f"file: {nb.relative_to(ROOT).with_suffix('').as_posix()}" in toc, nb


def test_book_builds_without_warnings():
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(ROOT), "-W", "-n", "--keep-going"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert (ROOT / "_build" / "html" / "book" / "intro.html").exists()
