"""The website builds without warnings, and the committed notebooks are fit to publish."""

from pathlib import Path

import pytest

from tools.book import chapter_notebooks, notebook_problems

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


@pytest.mark.parametrize("notebook", chapter_notebooks(ROOT), ids=lambda p: p.name)
def test_first_code_cell_installs_the_package_for_colab(notebook):
    import json

    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    first = "".join(cells[0]["source"])
    assert 'find_spec("unet_edu") is None' in first, "the first cell must install unet_edu only when it is missing"
    assert "git+https://github.com/unet-edu/unet-edu@main" in first
    assert "device()" in first and "budget()" in first
