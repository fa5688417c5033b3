"""The website builds without warnings from the saved notebooks alone, serves its own browser
libraries, and the committed notebooks are fit to publish."""

import io
import json
import re
import subprocess
import sys
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from tools import vendor_js
from tools.book import (MAX_CODE_LINE, MAX_OUTPUT_LINE, chapter_notebooks, merge_streams,
                        output_problems, package_state, publishing_problems, source_problems,
                        stamp_install, stamp_problems, stamped_ref)

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
        new_code_cell("x = " + "1 + " * 17 + "12345"),  # 77 characters
        new_markdown_cell("Seed 003 (§4.2) says so, and the seeds' advice agrees."),
        new_code_cell("check()", outputs=[new_output("execute_result", data={"text/plain": "True"},
                                                     execution_count=1)]),
        new_code_cell("table()", outputs=[_stream("a | b\n"), _stream("1 | 2\n")]),
        new_code_cell("train()", outputs=[_stream("loss: 100%|##########| 50/50 [00:03, 14.2it/s]\n")]),
        new_code_cell("show()", outputs=[_stream("| a | b |\n|---|---|\n| 1 | 2 |\n")]),
        new_markdown_cell("Re-train them with `python -m tools.train_experiments unet`."),
        new_code_cell("loss = experiments._seg_loss(model, batch)"),
        new_code_cell("check_claim('the loss falls', loss < 1)"),
        new_code_cell("report()", outputs=[_stream("word " * 16 + "\n")]),  # 80 characters
        new_code_cell("rows()", outputs=[_stream("model      params   IoU\n"
                                                 "U-Net     120,690   0.91\n"
                                                 "U-Net++   115,478   0.93\n")]),
    ])
    nb = json.loads(nbformat.writes(nb))
    source = source_problems(nb)
    assert any("cell 0" in p and "nbval-check-output" in p for p in source)
    assert any("cell 1" in p and f"over {MAX_CODE_LINE}" in p for p in source)
    assert sum("cell 2" in p and "does not have" in p for p in source) == 2
    assert any("cell 7" in p and "python -m tools.train_experiments" in p for p in source)
    assert any("cell 8" in p and "experiments._seg_loss" in p for p in source)
    assert any("cell 9" in p and "hide-input" in p for p in source)
    outputs = output_problems(nb)
    assert any("cell 3" in p and "bare True" in p for p in outputs)
    assert any("cell 4" in p and "split" in p for p in outputs)
    assert any("cell 5" in p and "progress bar" in p for p in outputs)
    assert any("cell 6" in p and "Markdown table" in p for p in outputs)
    assert any("cell 10" in p and f"over {MAX_OUTPUT_LINE}" in p for p in outputs)
    assert any("cell 11" in p and "aligned columns" in p for p in outputs)
    assert any("cell 9" in p and "no verdict line" in p for p in outputs)


def test_the_scan_passes_clean_cells_and_random_seeds():
    check = new_code_cell("check_claim('the loss falls', loss < 1)",
                          outputs=[new_output("display_data", data={
                              "text/html": '<div class="unet-check">' + "x" * 120 + "</div>",
                              "text/plain": "✓ checked: the loss falls"})])
    check.metadata["tags"] = ["hide-input"]
    nb = new_notebook(cells=[
        new_markdown_cell("The same seed gives the same images; three seeds each; the seed of "
                          "the generator."),
        new_code_cell("gen = seed_everything(0)  # the seed 0", outputs=[_stream("a\nb\n")]),
        new_code_cell("x = " + "1 + " * 17 + "1234",  # 76 characters: the column's width
                      outputs=[_stream("w" * MAX_OUTPUT_LINE + "\n")]),
        new_code_cell("from unet_edu.claims import check_claim\nfrom tools import x"),
        check,
        # an array and a tensor print in aligned columns too, and are not tables
        new_code_cell("a", outputs=[_stream("[[ 1.  2.  3.]\n [ 4.  5.  6.]\n [ 7.  8.  9.]]\n")]),
        new_code_cell("t", outputs=[_stream("tensor([[1,  2,  3],\n        [4,  5,  6],\n"
                                            "        [7,  8,  9]])\n")]),
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


@pytest.mark.parametrize("notebook", chapter_notebooks(ROOT), ids=lambda p: p.name)
def test_first_code_cell_installs_the_package_for_colab(notebook):
    cells = [c for c in _load(notebook)["cells"] if c["cell_type"] == "code"]
    first = "".join(cells[0]["source"])
    assert 'find_spec("unet_edu") is None' in first, \
        "the first cell must install unet_edu only when it is missing"
    # the commit the page was executed with (python -m tools.book execute stamps it), not a
    # branch whose package may have changed since
    assert re.fullmatch(r"[0-9a-f]{40}", stamped_ref(_load(notebook), URL) or ""), \
        "the first cell must install the commit it was executed with: python -m tools.book execute"
    assert "device()" in first and "budget()" in first


# ---- The commit stamped into the first cell, on a repository of our own --------------------

URL = "https://github.com/unet-edu/unet-edu"
FIRST_CELL = ('import importlib.util, subprocess, sys\n'
              'if importlib.util.find_spec("unet_edu") is None:\n'
              '    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q",\n'
              '                           "git+https://github.com/unet-edu/unet-edu@main"])\n'
              'print("ready")')


def _git(repo, *args):
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A small repository shaped like this one: a package, pyproject.toml, one chapter."""
    (tmp_path / "unet_edu").mkdir()
    (tmp_path / "unet_edu" / "__init__.py").write_text("VERSION = 1\n")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'unet-edu'\n")
    (tmp_path / "_config.yml").write_text(f"repository:\n  url: {URL}\n")
    (tmp_path / "_toc.yml").write_text("root: book/ch\n")
    (tmp_path / "book").mkdir()
    nbformat.write(new_notebook(cells=[new_markdown_cell("# A chapter"), new_code_cell(FIRST_CELL)]),
                   tmp_path / "book" / "ch.ipynb")
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "config", "user.email", "book@example.org")
    _git(tmp_path, "config", "user.name", "Book")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "start")
    return tmp_path


def _commit(repo, path, text, message="change"):
    (repo / path).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


def _chapter(repo):
    return json.loads((repo / "book" / "ch.ipynb").read_text())


def test_stamp_points_the_pip_line_at_a_commit_and_nothing_else(repo):
    nb = _chapter(repo)
    assert stamped_ref(nb, URL) == "main"
    head = _git(repo, "rev-parse", "HEAD")
    assert stamp_install(nb, head, URL) is True
    src = "".join(nb["cells"][1]["source"])
    assert src == FIRST_CELL.replace("@main", "@" + head)
    assert stamped_ref(nb, URL) == head
    assert stamp_install(nb, head, URL) is False  # stamping twice changes nothing
    with pytest.raises(ValueError, match="40-character"):
        stamp_install(nb, "main", URL)
    bare = json.loads(nbformat.writes(new_notebook(cells=[new_code_cell("import torch")])))
    assert stamped_ref(bare, URL) is None
    with pytest.raises(ValueError, match="no 'git\\+"):
        stamp_install(bare, head, URL)


def test_the_stamp_keeps_a_pip_target_split_over_two_lines():
    # "git+<url>" and "@<ref>" as two string literals (Python joins them): the commit then fits
    # the page's 76-character column, and stamping keeps the split.
    nb = new_notebook(cells=[new_code_cell(FIRST_CELL.replace(
        '"git+https://github.com/unet-edu/unet-edu@main"',
        '"git+https://github.com/unet-edu/unet-edu"\n                           "@main"'))])
    assert stamped_ref(nb, URL) == "main"
    assert stamp_install(nb, "a" * 40, URL) is True
    src = nb.cells[0]["source"]
    assert stamped_ref(nb, URL) == "a" * 40
    assert '"git+https://github.com/unet-edu/unet-edu"\n' in src and '"@' + "a" * 40 + '"' in src
    assert max(len(line) for line in src.splitlines()) <= 76


def test_check_accepts_a_stamped_commit_until_the_package_changes(repo):
    nb = _chapter(repo)
    assert "not the commit" in " ".join(stamp_problems(nb, repo))  # @main: a branch
    stamp_install(nb, _git(repo, "rev-parse", "HEAD"), URL)
    assert stamp_problems(nb, repo) == []
    _commit(repo, "book/notes.md", "prose only\n")  # the chapters' own commit
    assert stamp_problems(nb, repo) == []
    _commit(repo, "unet_edu/__init__.py", "VERSION = 2\n")
    problems = stamp_problems(nb, repo)
    assert len(problems) == 1 and "unet_edu/__init__.py" in problems[0], problems


def test_check_reports_a_commit_outside_the_history_of_head(repo):
    nb = _chapter(repo)
    start = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "-b", "elsewhere")
    other = _commit(repo, "book/notes.md", "on a side branch\n")
    _git(repo, "checkout", "-q", "main")
    stamp_install(nb, other, URL)
    assert "not in the history of HEAD" in " ".join(stamp_problems(nb, repo))
    stamp_install(nb, "f" * 40, URL)
    assert "does not have" in " ".join(stamp_problems(nb, repo))
    stamp_install(nb, start, URL)
    assert stamp_problems(nb, repo) == []


def test_package_state_names_uncommitted_package_files(repo):
    head = _git(repo, "rev-parse", "HEAD")
    assert package_state(repo) == (head, [])
    (repo / "book" / "draft.md").write_text("not the package\n")
    assert package_state(repo) == (head, [])
    (repo / "unet_edu" / "__init__.py").write_text("VERSION = 3\n")
    (repo / "unet_edu" / "new.py").write_text("")
    (repo / "pyproject.toml").write_text("[project]\nname = 'changed'\n")
    assert sorted(package_state(repo)[1]) == ["pyproject.toml", "unet_edu/__init__.py",
                                              "unet_edu/new.py"]
    assert package_state(repo.parent / "nowhere")[0] is None


def _tools_book(repo, *args):
    return subprocess.run([sys.executable, "-m", "tools.book", *args], cwd=repo,
                          capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                               "HOME": str(repo)})


def test_execute_refuses_while_the_package_has_uncommitted_changes(repo):
    (repo / "unet_edu" / "__init__.py").write_text("VERSION = 4\n")
    before = (repo / "book" / "ch.ipynb").read_text()
    out = _tools_book(repo, "execute")
    assert out.returncode == 2, out.stderr
    assert "refusing" in out.stderr and "unet_edu/__init__.py" in out.stderr
    assert "--allow-dirty" in out.stderr
    assert (repo / "book" / "ch.ipynb").read_text() == before  # nothing executed or stamped


def test_execute_stamps_the_commit_it_executed_with(repo):
    out = _tools_book(repo, "execute")
    assert out.returncode == 0, out.stdout + out.stderr
    nb = _chapter(repo)
    head = _git(repo, "rev-parse", "HEAD")
    assert stamped_ref(nb, URL) == head
    assert "".join(nb["cells"][1]["outputs"][0]["text"]) == "ready\n"  # it ran, too
    check = _tools_book(repo, "check")
    assert "installs" not in check.stdout, check.stdout  # the stamp passes its own check


def test_execute_with_allow_dirty_warns_that_the_stamp_is_not_what_ran(repo):
    (repo / "unet_edu" / "__init__.py").write_text("VERSION = 5\n")
    out = _tools_book(repo, "execute", "--allow-dirty")
    assert out.returncode == 0, out.stderr
    assert "WARNING" in out.stderr and "NOT the package" in out.stderr
    assert stamped_ref(_chapter(repo), URL) == _git(repo, "rev-parse", "HEAD")


# ---- The browser libraries the site serves itself ---------------------------------------------

def test_vendored_browser_libraries_are_the_pinned_packages_unchanged():
    # every file listed, with the SHA-256 it had when tools.vendor_js copied it from the
    # package whose tarball matched the pinned integrity; nothing else in the folder
    assert vendor_js.manifest_problems(ROOT / vendor_js.VENDOR) == []


def test_config_loads_the_vendored_copies():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    vendor = ROOT / vendor_js.VENDOR
    scripts = [config["mathjax_path"], *config["nb_ipywidgets_js"]]
    assert all("://" not in s and (vendor / s).is_file() for s in scripts), scripts
    folders = {p.folder for p in vendor_js.PACKAGES}
    assert {s.split("/")[0] for s in scripts} == folders
    # RequireJS must come before the widget manager, which is a set of AMD modules
    assert [s.rsplit("/", 1)[1] for s in config["nb_ipywidgets_js"]] == ["require.js",
                                                                         "embed-amd.js"]
    assert all(attrs in ({}, None) for attrs in config["nb_ipywidgets_js"].values()), \
        "no integrity or CDN attributes for same-origin copies"


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _integrity(data: bytes) -> str:
    import base64
    import hashlib
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def test_vendoring_takes_only_the_pinned_bytes_and_the_listed_files(tmp_path):
    data = _tarball({"package/es5/tex.js": b"tex", "package/es5/a11y/sre.js": b"sre",
                     "package/es5/a11y/deeper/x.js": b"x", "package/es5/node-main.js": b"node",
                     "package/LICENSE": b"licence"})
    pkg = vendor_js.Package("mathjax", "9.9.9", _integrity(data), "mathjax-9.9.9", "package",
                            ("LICENSE", "es5/tex.js", "es5/a11y/*.js"))
    files = vendor_js.package_files(pkg, data)
    # MathJax's es5/ is flattened; "*" does not reach into a deeper folder
    assert files == {"LICENSE": b"licence", "tex.js": b"tex", "a11y/sre.js": b"sre"}
    with pytest.raises(ValueError, match="not the pinned"):
        vendor_js.package_files(pkg, data + b"tampered")
    missing = vendor_js.Package("mathjax", "9.9.9", _integrity(data), "m", "package",
                                ("es5/gone.js",))
    with pytest.raises(ValueError, match="nothing matches"):
        vendor_js.package_files(missing, data)
    # written, listed in a manifest, and any later change to the folder is reported
    entry = vendor_js.write_package(pkg, files, tmp_path)
    (tmp_path / "MANIFEST.json").write_text(json.dumps({pkg.folder: entry}))
    assert vendor_js.manifest_problems(tmp_path, (pkg,)) == []
    (tmp_path / pkg.folder / "tex.js").write_bytes(b"edited")
    (tmp_path / pkg.folder / "extra.js").write_bytes(b"")
    problems = vendor_js.manifest_problems(tmp_path, (pkg,))
    assert any("tex.js: changed" in p for p in problems)
    assert any("extra.js: not listed" in p for p in problems)
    newer = vendor_js.Package("mathjax", "10.0.0", pkg.integrity, pkg.folder, "package", ())
    assert any("version" in p for p in vendor_js.manifest_problems(tmp_path, (newer,)))


# ---- The build --------------------------------------------------------------------------------

def test_book_build_needs_nothing_but_its_own_requirements():
    # The website's command installs requirements-book.txt alone: no torch, no package.  Its
    # pins are the ones the tests build with (requirements.txt includes the file).
    book = [line for line in (ROOT / "requirements-book.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert book and all(re.fullmatch(r"[\w.-]+==[\w.]+", line) for line in book), book
    assert not any(line.split("==")[0] in ("torch", "torchvision", "unet-edu") for line in book)
    full = (ROOT / "requirements.txt").read_text().splitlines()
    assert "-r requirements-book.txt" in full
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    # and the README's website command installs that file, not everything
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"<!-- build-command -->\s*```bash\n(.+?)\n```", readme).group(1)
    assert "pip install -r requirements-book.txt" in command and "jupyter-book build ." in command
    assert "requirements.txt" not in command.replace("requirements-book.txt", "")


class _LoadedAddresses(HTMLParser):
    """What a page makes the browser load by itself: scripts, style sheets, icons, preloads,
    images, frames, media (links a reader may follow are not loaded, and do not count)."""

    LOADING_RELS = {"stylesheet", "icon", "preload", "modulepreload", "prefetch", "manifest",
                    "preconnect", "dns-prefetch", "apple-touch-icon"}

    def __init__(self):
        super().__init__()
        self.addresses = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "link":
            if set((attrs.get("rel") or "").lower().split()) & self.LOADING_RELS:
                self.addresses.append(attrs.get("href") or "")
        elif tag in ("script", "img", "iframe", "source", "audio", "video", "embed"):
            self.addresses.append(attrs.get("src") or "")
        elif tag == "object":
            self.addresses.append(attrs.get("data") or "")


def test_built_pages_load_nothing_from_other_servers(built_site):
    # Every script, style sheet, image and frame of every page comes from the site itself
    # (the browser test also watches the requests a page makes while it runs).
    assert built_site["returncode"] == 0, built_site["log"]
    html = built_site["html"]
    remote = {}
    for page in sorted(html.rglob("*.html")):
        parser = _LoadedAddresses()
        parser.feed(page.read_text(errors="replace"))
        found = [a for a in parser.addresses if re.match(r"\s*(https?:)?//", a)]
        if found:
            remote[str(page.relative_to(html))] = found
    assert remote == {}, f"pages that load from other servers: {dict(list(remote.items())[:5])}"


def test_book_builds_without_warnings(built_site):
    assert built_site["returncode"] == 0, built_site["log"]
    assert (built_site["html"] / "book" / "intro.html").exists()


def test_a_widget_state_that_lost_a_model_is_not_publishable():
    view = {"application/vnd.jupyter.widget-view+json": {"model_id": "a" * 32}}
    nb = new_notebook(cells=[new_code_cell("w", execution_count=1, outputs=[
        new_output("display_data", data=view)])])
    box = {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_" + "b" * 32]}}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "state": {"a" * 32: box}}}
    assert any("does not hold" in p for p in publishing_problems(nb))
    nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]["b" * 32] = {
        "model_name": "ImageModel", "state": {}}
    assert publishing_problems(nb) == []
