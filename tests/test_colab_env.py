"""Installing the package in Colab keeps Colab's own packages, and the book works there.

Colab comes with torch, torchvision and ipywidgets 7.7.1 already installed, and a chapter's
first cell runs ``pip install`` of this package on top.  Three levels of checks stand for that:

* Without downloads: the declared version ranges (``pyproject.toml``) accept every torch,
  torchvision and ipywidgets that Colab has shipped since 2024, and every version in Colab's
  current runtime (``tools/colab_check.py``'s ``COLAB_PACKAGES``), so pip has no reason to
  replace any of them; the chapters' first cell has the install line the full check rewrites;
  the probe that changes an explorer's controls from Python tells a control whose frame only
  the browser switches (a bare ``jslink``) from one that works through the kernel.
* A Colab-like virtual environment (runs by default; it needs the package registry once, for
  ipywidgets 7.7.1 and setuptools): it sees this machine's torch and torchvision (through a
  ``.pth`` file pointing at the test run's own site-packages, instead of installing several GB
  of torch again) and has its own ipywidgets 7.7.1, which shadows the test run's ipywidgets 8.
  ``pip install --dry-run --report`` of the repository must plan to install the package and
  nothing else; the real install (``--no-deps``, after that check) leaves the three versions as
  they were; every import the chapters make succeeds; and a frame-switching widget follows its
  controls from Python under ipywidgets 7.  The environment is kept under ``_build/``.
* Colab's runtime itself, opt-in (downloads about 3 GB once; then 15 to 30 minutes on two
  cores): ``python -m tools.colab_check`` builds a Python 3.13 environment with Colab's
  packages at Colab's versions, installs a wheel of the working tree by running the chapters'
  first cell, checks that pip changes none of Colab's packages, executes every chapter in a
  kernel there, changes every control of every explorer from Python and checks that the shown
  frame follows, and runs the core unit tests with that interpreter.  Run it directly (see its
  ``--help``) or through pytest::

      UNET_EDU_COLAB_RUNTIME=1 python -m pytest tests/test_colab_env.py -k colabs_runtime

  ``UNET_EDU_COLAB_DIR`` says where the environment goes (default
  ``~/.cache/unet_edu/colab``, about 5 GB); ``UNET_EDU_COLAB_COMMIT=HEAD`` checks the last
  commit instead of the working tree.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tools import colab_check
from tools.book import chapter_notebooks

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "_build" / "colab-envs"

pytestmark = pytest.mark.colab

# Versions Colab's default runtime has shipped (torch/torchvision pairs, and its ipywidgets),
# and those of this machine's torch (which the Colab-like venv below reuses).
COLAB_TORCH = ["2.3.1", "2.5.1", "2.6.0", "2.8.0", "2.9.0", "2.11.0", "2.13.0", "2.14.1"]
COLAB_TORCHVISION = ["0.18.1", "0.20.1", "0.21.0", "0.23.0", "0.24.0", "0.26.0", "0.28.0",
                     "0.29.1"]
COLAB_IPYWIDGETS = ["7.7.1", "8.1.5"]
# Host packages the Colab-like venv does not see: ipywidgets 8 and its front-end packages, and
# unet_edu itself (with its editable-install hooks).
NOT_SHARED = ("ipywidgets", "widgetsnbextension", "jupyterlab_widgets", "unet_edu", "__editable__")


def _run(args, **kw):
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(args, capture_output=True, text=True, env=env, **kw)
    assert result.returncode == 0, (f"{' '.join(map(str, args))} failed:\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}


@pytest.mark.parametrize("name, versions", [("torch", COLAB_TORCH),
                                            ("torchvision", COLAB_TORCHVISION),
                                            ("ipywidgets", COLAB_IPYWIDGETS)])
def test_declared_ranges_accept_colabs_versions(name, versions):
    spec = _requirements()[name].specifier
    rejected = [v for v in versions if not spec.contains(v)]
    assert not rejected, f"pyproject.toml's {name}{spec} would make pip replace Colab's {rejected}"


def test_no_dependency_is_pinned_exactly():
    pinned = [str(r) for r in _requirements().values() if any(s.operator == "==" for s in r.specifier)]
    assert not pinned, f"exact pins belong in requirements.txt, not pyproject.toml: {pinned}"


def canonical_name(name: str) -> str:
    return colab_check.canonical(name)


def test_colabs_current_runtime_satisfies_every_dependency():
    """Colab has every dependency at a version the ranges accept: pip installs only the package."""
    colab = colab_check.colab_pins()
    missing = sorted(n for n in _requirements() if canonical_name(n) not in colab)
    assert not missing, (f"Colab's runtime of {colab_check.COLAB_RUNTIME} lacks {missing}: pip "
                         f"would add them in the first cell; check that this is wanted")
    rejected = {str(r): colab[canonical_name(n)] for n, r in _requirements().items()
                if not r.specifier.contains(colab[canonical_name(n)], prereleases=True)}
    assert not rejected, (f"pyproject.toml would make pip replace Colab's versions "
                          f"(requirement: Colab's version): {rejected}")


def test_the_colab_pins_are_one_consistent_list():
    items = colab_check.COLAB_PACKAGES.split()
    names = [canonical_name(i.split("==")[0]) for i in items]
    assert all(i.count("==") == 1 for i in items) and len(names) == len(set(names)), items
    pins = colab_check.colab_pins()
    for name in ("torch", "torchvision", "ipywidgets", "ipykernel", "nbclient", "pytest"):
        assert name in pins, f"the Colab environment needs {name}"
    assert pins["ipywidgets"].startswith("7."), "Colab's runtime ships ipywidgets 7"


def test_every_chapter_starts_with_the_install_line_the_check_rewrites():
    notebooks = colab_check.chapters(ROOT)
    assert [nb.name for nb in notebooks] == [nb.name for nb in chapter_notebooks(ROOT)
                                             if nb.name[:2].isdigit()]
    for nb in notebooks:
        source = colab_check.first_cell(nb)  # raises, naming the fix, when the line changed
        rewritten = colab_check.INSTALL_SOURCE.sub('"/tmp/unet_edu.whl"', source)
        assert "git+" not in rewritten and '"/tmp/unet_edu.whl"' in rewritten, nb.name
        compile(rewritten, nb.name, "exec")


def test_core_tests_of_the_colab_check_run_without_the_repository():
    """The core tests run against the installed wheel: they must not need tools/ or the book."""
    for name in colab_check.CORE_TESTS:
        tree = ast.parse((ROOT / "tests" / name).read_text())
        roots = {alias.name.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.Import) for alias in node.names}
        roots |= {node.module.split(".")[0] for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.module and not node.level}
        assert not roots & {"tools", "nbval", "conftest"}, (name, roots)


def _pages(control, n, python_side: bool):
    """``n`` one-line pages switched by ``control``: through the kernel, or only by jslink."""
    import ipywidgets as W

    trait = "index" if isinstance(control, W.Dropdown) else "value"
    pages = [W.HTML(f"page {i}") for i in range(n)]
    stack = W.Stack(pages, selected_index=getattr(control, trait))
    W.jslink((control, trait), (stack, "selected_index"))
    if python_side:
        control.observe(lambda change: setattr(stack, "selected_index", change["new"]), trait)
    return stack


def test_the_probe_flags_a_control_that_only_the_browser_follows():
    W = pytest.importorskip("ipywidgets")
    if not hasattr(W, "Stack"):
        pytest.skip("needs ipywidgets 8 (Stack)")
    slider = W.IntSlider(min=0, max=2)
    result = colab_check.exercise_controls(W.VBox([slider, _pages(slider, 3, False)]))
    assert result["changes"] == 3 and len(result["dead"]) == 3, result
    assert result["dead"][0] == "IntSlider '': value 0 -> 1"

    slider = W.IntSlider(min=0, max=2, value=1)
    result = colab_check.exercise_controls(W.VBox([slider, _pages(slider, 3, True)]))
    assert result["dead"] == [] and result["changes"] == 3 and slider.value == 1, result


def test_the_probe_reaches_controls_shown_for_one_value_of_another():
    W = pytest.importorskip("ipywidgets")
    if not hasattr(W, "Stack"):
        pytest.skip("needs ipywidgets 8 (Stack)")
    model = W.Dropdown(options=["a", "b"], description="model")
    layers = [W.Dropdown(options=["x", "y", "z"], description=f"layer {m}") for m in "ab"]
    pages = [W.VBox([layers[0], _pages(layers[0], 3, True)]),
             W.VBox([layers[1], _pages(layers[1], 3, False)])]  # model b's menu: browser only
    outer = W.Stack(pages, selected_index=0)
    model.observe(lambda change: setattr(outer, "selected_index", change["new"]), "index")
    result = colab_check.exercise_controls(W.VBox([model, outer]))
    shown = {c["control"]: c["shown_with"] for c in result["controls"]}
    assert shown == {"Dropdown 'model'": [], "Dropdown 'layer a'": [],
                     "Dropdown 'layer b'": ["Dropdown 'model'=1"]}, result
    assert result["dead"] and all(d.startswith("Dropdown 'layer b'") for d in result["dead"])
    assert model.index == 0 and outer.selected_index == 0  # put back as found


def test_linked_frames_follow_their_controls_from_python():
    """In this run's ipywidgets (8), too, not only through the browser's ``jslink``."""
    import ipywidgets as W

    from unet_edu.widgets import linked_stack

    menu = W.Dropdown(options=["a", "b"], description="menu")
    pages = []
    for m in "ab":
        slider = W.IntSlider(min=0, max=2, description=m)
        pages.append(W.VBox([slider, linked_stack([W.HTML(m + str(i)) for i in range(3)],
                                                  slider)]))
    result = colab_check.exercise_controls(W.VBox([menu, linked_stack(pages, menu, "index")]))
    assert result["dead"] == [], result["dead"]
    assert len(result["controls"]) == 3 and result["changes"] == 8, result


def _colab_venv() -> Path:
    """A venv that sees this run's torch and torchvision, with its own ipywidgets 7.7.1."""
    env = ENVS / "colab"
    python = env / "bin" / "python"
    marker = env / ".ready"
    if not marker.exists():
        shutil.rmtree(ENVS, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(env)])
        own = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
        # The host's packages, less the ones Colab has its own copy of (ipywidgets 8) and this
        # package itself (installed editable here; it is what the test installs).
        shim = ENVS / "host-packages"
        shim.mkdir(parents=True, exist_ok=True)
        for host in map(Path, site.getsitepackages()):
            for entry in host.iterdir():
                if not entry.name.lower().startswith(NOT_SHARED) and not (shim / entry.name).exists():
                    (shim / entry.name).symlink_to(entry)
        (own / "zz_host_packages.pth").write_text(f"{shim}\n")  # after the venv's own packages
        # The venv's bundled setuptools is older than what the host's packages declare.
        _run([str(python), "-m", "pip", "uninstall", "-q", "-y", "setuptools"])
        _run([str(python), "-m", "pip", "install", "-q", "ipywidgets==7.7.1"])
        marker.write_text("ok")
    return python


def _versions(python: Path, names=("torch", "torchvision", "ipywidgets")) -> dict:
    code = ("import json, importlib.metadata as m; "
            "print(json.dumps({n: m.version(n) for n in %r}))" % (list(names),))
    return json.loads(_run([str(python), "-c", code]))


def _chapter_imports() -> list[str]:
    """Every import statement in the chapters' code cells (magics and shell lines skipped)."""
    found = set()
    for nb in chapter_notebooks(ROOT):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"])
            lines = [ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!"))]
            try:
                tree = ast.parse("\n".join(lines))
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "level", 0) == 0:
                    found.add(ast.unparse(node))
    return sorted(found)


WIDGET_CHECK = """
import ipywidgets as W
from unet_edu.widgets import IPYWIDGETS_8, linked_stack
assert not IPYWIDGETS_8, W.__version__
# Two levels, as in the explorers: a menu of pages, each with its own slider of frames.
menu = W.Dropdown(options=["a", "b"])
pages = []
for m in "ab":
    slider = W.IntSlider(min=0, max=2, description=m)
    pages.append(W.VBox([slider, linked_stack([W.HTML(m + str(i)) for i in range(3)], slider)]))
view = W.VBox([menu, linked_stack(pages, menu, "index")])
result = exercise_controls(view)
assert result["dead"] == [] and len(result["controls"]) == 3 and result["changes"] == 8, result
print("widgets ok")
"""


def test_colab_like_install_keeps_torch_and_ipywidgets():
    python = _colab_venv()
    before = _versions(python)
    assert before["ipywidgets"] == "7.7.1"
    report = ENVS / "colab-report.json"
    _run([str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
          str(ROOT)])
    planned = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert planned == {"unet-edu"}, f"pip would install or replace more than the package: {planned}"
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(ROOT)])
    assert _versions(python) == before, "installing unet_edu replaced a preinstalled package"

    script = "\n".join(_chapter_imports()) + "\nimport unet_edu.viz, unet_edu.data, unet_edu.train\n"
    script += "import unet_edu, ipywidgets\nprint('imports ok', ipywidgets.__version__, unet_edu.__file__)\n"
    out = _run([str(python), "-c", script], cwd=ENVS)
    assert "imports ok 7.7.1" in out and "site-packages" in out, out  # the installed copy
    probe = colab_check.probe_source()
    assert "widgets ok" in _run([str(python), "-c", probe + WIDGET_CHECK], cwd=ENVS)


@pytest.mark.skipif(not os.environ.get("UNET_EDU_COLAB_RUNTIME"),
                    reason="opt-in (downloads about 3 GB once, then about 15 min): "
                           "UNET_EDU_COLAB_RUNTIME=1 python -m pytest tests/test_colab_env.py "
                           "-k colabs_runtime")
def test_the_book_in_colabs_runtime():
    """``python -m tools.colab_check``: the book in Colab's runtime (see the module docstring)."""
    args = [sys.executable, "-m", "tools.colab_check"]
    if os.environ.get("UNET_EDU_COLAB_COMMIT"):
        args += ["--commit", os.environ["UNET_EDU_COLAB_COMMIT"]]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"{result.stdout[-12000:]}\n{result.stderr[-3000:]}"
    assert "passed: the book works in Colab's runtime" in result.stdout
