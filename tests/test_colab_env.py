"""Installing the package in a Colab-like environment keeps Colab's own torch and ipywidgets.

Colab comes with torch, torchvision and ipywidgets 7.7.1 already installed, and a chapter's
first cell runs ``pip install`` of this package on top.  Two checks stand for that:

* The declared version ranges (``pyproject.toml``) accept every torch, torchvision and
  ipywidgets that Colab has shipped since 2024, so pip has no reason to replace them.
* A Colab-like virtual environment: it sees this machine's torch and torchvision (through a
  ``.pth`` file pointing at the test run's own site-packages, instead of installing several GB
  of torch again) and has its own ipywidgets 7.7.1, which shadows the test run's ipywidgets 8.
  ``pip install --dry-run --report`` of the repository must plan to install the package and
  nothing else; the real install (``--no-deps``, after that check) leaves the three versions as
  they were; every import the chapters make succeeds; and a frame-switching widget works under
  ipywidgets 7.

The environment is kept under ``_build/`` so that a second local run is quick.  It needs the
package registry once (ipywidgets 7.7.1, and setuptools to build the package).
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

from tools.book import chapter_notebooks

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "_build" / "colab-envs"

pytestmark = pytest.mark.colab

# Versions Colab's default runtime has shipped (torch/torchvision pairs, and its ipywidgets).
COLAB_TORCH = ["2.3.1", "2.5.1", "2.6.0", "2.8.0", "2.9.0", "2.13.0", "2.14.1"]
COLAB_TORCHVISION = ["0.18.1", "0.20.1", "0.21.0", "0.23.0", "0.24.0", "0.28.0", "0.29.1"]
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
from unet_edu.widgets import IPYWIDGETS_8, linked_stack, png_image
assert not IPYWIDGETS_8, W.__version__
frames = [W.HTML(str(i)) for i in range(3)]
slider = W.IntSlider(min=0, max=2)
box = linked_stack(frames, slider)
slider.value = 2
assert box.children[0] is frames[2]
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
    assert "widgets ok" in _run([str(python), "-c", WIDGET_CHECK], cwd=ENVS)
