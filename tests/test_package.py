"""The installed package: what ``help(unet_edu)`` says, and what it leaves out."""

import pkgutil
from pathlib import Path

import unet_edu

ROOT = Path(__file__).resolve().parents[1]


def test_help_describes_every_module():
    modules = {m.name for m in pkgutil.iter_modules(unet_edu.__path__)}
    missing = sorted(m for m in modules if f":mod:`unet_edu.{m}`" not in unet_edu.__doc__)
    assert not missing, f"unet_edu's docstring (help(unet_edu)) does not describe {missing}"


def test_maintenance_tools_are_not_installed():
    # Learners install the package; the notebook executor, trainers and benchmarks stay in tools/.
    modules = {m.name for m in pkgutil.walk_packages(unet_edu.__path__, "unet_edu.")}
    for tool in ("unet_edu.book", "unet_edu.bench", "unet_edu.sampler_sweep",
                 "unet_edu.pretrained.train"):
        assert tool not in modules
    assert (ROOT / "tools" / "book.py").exists() and (ROOT / "tools" / "bench").is_dir()
