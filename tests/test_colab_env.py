"""Installing the package in a Colab-like environment keeps Colab's own torch and ipywidgets.

Colab comes with torch, torchvision and ipywidgets 7.7.1 already installed, and a chapter's
first cell runs ``pip install`` of this package on top.  Two fresh virtual environments play
that role here:

* ``colab``: torch and torchvision as a matched pair (the ones on this machine), ipywidgets
  7.7.1; after ``pip install <repo>`` the three are unchanged, every import the chapters make
  succeeds, and a frame-switching widget works under ipywidgets 7.
* ``older-torch``: torch 2.13 with torchvision 0.28 declared installed; pip's resolver must
  leave both alone (checked with ``--dry-run``), and the core modules, which need only torch,
  run a model and a sampler on that older torch.

The environments are kept under ``_build/`` so that a second local run is quick.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.book import chapter_notebooks

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "_build" / "colab-envs"

pytestmark = pytest.mark.colab


def _run(args, **kw):
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(args, capture_output=True, text=True, env=env, **kw)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _venv(name: str, preinstalled: list[str], no_deps: list[str] = ()) -> Path:
    """A fresh venv with ``preinstalled`` packages (created once, then reused)."""
    env = ENVS / name
    marker = env / ".ready"
    python = env / "bin" / "python"
    if not marker.exists():
        _run([sys.executable, "-m", "venv", "--clear", str(env)])
        _run([str(python), "-m", "pip", "install", "-q", *preinstalled])
        if no_deps:
            _run([str(python), "-m", "pip", "install", "-q", "--no-deps", *no_deps])
        marker.write_text("ok")
    return python


def _versions(python: Path, names=("torch", "torchvision", "ipywidgets")) -> dict:
    code = ("import json, importlib.metadata as m; print(json.dumps({n: m.version(n) for n in %r}))" % (list(names),))
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
    import torch
    import torchvision

    pair = [f"torch=={torch.__version__.split('+')[0]}", f"torchvision=={torchvision.__version__.split('+')[0]}"]
    python = _venv("colab", [*pair, "ipywidgets==7.7.1"])
    before = _versions(python)
    assert before["ipywidgets"] == "7.7.1"
    _run([str(python), "-m", "pip", "install", "-q", str(ROOT)])
    assert _versions(python) == before, "installing unet_edu replaced a preinstalled package"

    imports = _chapter_imports()
    script = "\n".join(imports) + "\nimport unet_edu.viz, unet_edu.data, unet_edu.train\nprint('imports ok')\n"
    out = _run([str(python), "-c", script], cwd=ENVS)
    assert "imports ok" in out
    assert "widgets ok" in _run([str(python), "-c", WIDGET_CHECK], cwd=ENVS)


def test_older_torch_is_left_alone_and_core_runs():
    python = _venv("older-torch", ["torch==2.13.0", "ipywidgets==7.7.1"], no_deps=["torchvision==0.28.0"])
    before = _versions(python)
    assert before["torch"].startswith("2.13")
    report = ENVS / "older-torch-report.json"
    _run([str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report), str(ROOT)])
    planned = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert not planned & {"torch", "torchvision", "ipywidgets"}, f"pip would replace: {planned}"
    _run([str(python), "-m", "pip", "install", "-q", str(ROOT)])
    assert _versions(python) == before
    # The core needs only torch: build a model and run two sampling steps on the older torch.
    code = (
        "import torch\n"
        "from unet_edu.models import DiffusionUNet\n"
        "from unet_edu.diffusion import NoiseSchedule, ddim_sample\n"
        "m = DiffusionUNet(base_channels=8, channel_mult=(1, 2), norm_groups=4, num_heads=2, num_classes=2)\n"
        "x = ddim_sample(m, NoiseSchedule(), (2, 1, 8, 8), steps=2, y=torch.tensor([0, 1]), progress=False).x\n"
        "print('core ok', tuple(x.shape), torch.__version__)\n"
    )
    out = _run([str(python), "-c", code], cwd=ENVS)
    assert "core ok (2, 1, 8, 8) 2.13" in out
