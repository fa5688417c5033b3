"""Test settings for unit tests and the nbval run of the chapters: small CPU budget, no downloads."""

import os

os.environ.setdefault("UNET_EDU_FAST", "1")
os.environ.setdefault("UNET_EDU_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Executed notebooks keep a one-line summary, not a progress bar (a bar is a stream of widget
# messages that, under load, arrive after nbval has stopped waiting for output).
os.environ.setdefault("UNET_EDU_PROGRESS", "summary")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


# The build as the website's own command runs it (requirements-book.txt: no torch, no package):
# importing either fails inside the build, so a page or extension that needed them would fail
# the build here too, instead of working only because the test environment has everything.
_BUILD_WITHOUT_TORCH = """
import sys
for name in ("torch", "torchvision", "unet_edu"):
    sys.modules[name] = None  # "import torch" now raises ImportError
from jupyter_book.cli.main import main
sys.argv = ["jupyter-book", *sys.argv[1:]]
sys.exit(main())
"""


@pytest.fixture(scope="session")
def built_site():
    """Build the website once per test run (``jupyter-book build . -W``, with torch and the
    package unimportable, as from requirements-book.txt alone); return its html folder.

    The return code and the end of the log come with it, so that the build test can report
    them, and the browser test uses the same pages.
    """
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent
    cmd = [sys.executable, "-c", _BUILD_WITHOUT_TORCH,
           "build", str(root), "--all", "-W", "-n", "--keep-going"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=root,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return {"html": root / "_build" / "html", "returncode": result.returncode,
            "log": result.stdout[-4000:] + result.stderr[-4000:]}


def pytest_addoption(parser):
    parser.addini("nbval_output_timeout", default="120",
                  help="seconds nbval waits for a cell's remaining output after the cell has run "
                       "(nbval's own wait is a fixed 5 s, too short on a busy machine)")


def pytest_collection_modifyitems(config, items):
    """Give every notebook cell more patience for its trailing output.

    After a cell's reply arrives, nbval reads the kernel's output messages until the kernel says
    it is idle, waiting at most ``output_timeout`` seconds (fixed at 5 in nbval 0.11) for each
    message.  On a loaded machine the kernel can take longer than that to send them, and the
    cell fails although nothing is wrong.  A longer wait costs nothing when the output is prompt:
    reading stops at the idle message.
    """
    patience = float(config.getini("nbval_output_timeout"))
    for item in items:
        if hasattr(item, "output_timeout"):  # nbval's IPyNbCell
            item.output_timeout = patience
