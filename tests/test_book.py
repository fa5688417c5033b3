"""The website builds without warnings, and the committed notebooks are fit to publish."""

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


def test_book_builds_without_warnings(built_site):
    assert built_site["returncode"] == 0, built_site["log"]
    assert (built_site["html"] / "book" / "intro.html").exists()
