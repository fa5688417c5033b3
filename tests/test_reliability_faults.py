"""Faults a run must survive: a full disk, a read-only disk, kill -9, two processes at once.

These tests use real faults, not simulated ones: a tmpfs of a few hundred kilobytes in a
private mount namespace (skipped, with the reason, where mounting is not permitted), processes
killed with SIGKILL, and processes saving to one path side by side.
"""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from unet_edu.train import load_checkpoint, read_checkpoint_info, save_checkpoint, sidecar_path

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import os, sys, torch
torch.set_num_threads(1)
from unet_edu.models import NaiveCNN
from unet_edu.train import fit, save_checkpoint, load_checkpoint
import unet_edu.checkpoints as checkpoints

def model(seed=0, hidden=4, depth=2):
    torch.manual_seed(seed)
    return NaiveCNN(hidden=hidden, depth=depth)

def data():
    return torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))

def loss(m, batch, gen):
    (x,) = batch
    return ((m(x) - x) ** 2).mean()
"""


def _command(code: str, *args) -> list:
    return [sys.executable, "-c", PRELUDE + textwrap.dedent(code), *map(str, args)]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "UNET_EDU_PROGRESS": "off"}


def _python(code: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(_command(code, *args), env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _on_tmpfs(tmp_path: Path, code: str, size: str = "256k") -> str:
    """Run ``code`` with a fresh tmpfs of ``size`` mounted at ``sys.argv[1]``, in a private
    mount namespace (nothing is mounted outside the child).  Skips where that is refused."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare (util-linux) to mount a small tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    wrap = [unshare, "--mount", "--map-root-user", "sh", "-c",
            'mount -t tmpfs -o size="$1" none "$2" && shift 2 && exec "$@"', "sh", size, str(mnt)]
    probe = subprocess.run(wrap + ["true"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"mounting a tmpfs is not permitted here: {probe.stderr.strip()}")
    result = subprocess.run(wrap + _command(code, mnt), env=_env(), capture_output=True,
                            text=True, timeout=300)
    return _ok(result)


# ------------------------------------------------------------------ a full disk
def test_full_disk_refuses_early_and_a_save_that_fills_it_keeps_the_old_checkpoint(tmp_path):
    out = _on_tmpfs(tmp_path, """
        import errno, shutil
        mnt = sys.argv[1]
        ck = os.path.join(mnt, "run.safetensors")
        fit(model(0), loss, data(), steps=2, batch_size=4, checkpoint=ck, progress=False)
        before = open(ck, "rb").read(), open(ck + ".json", "rb").read()

        # 1. A run whose checkpoint cannot fit is refused before its first step.
        steps = []
        try:
            fit(model(1, hidden=128, depth=3), loss, data(), steps=5, batch_size=4,
                checkpoint=os.path.join(mnt, "big.safetensors"), progress=False,
                callback=lambda s, v: steps.append(s))
        except OSError as err:
            assert err.errno == errno.ENOSPC and "MB free" in str(err), err
            assert steps == [], steps
            print("refused early")

        # 2. The disk fills up while the weights are written: a real ENOSPC, plainly said.
        real = checkpoints.save_file
        def filling(tensors, name, metadata=None):
            free = shutil.disk_usage(mnt).free
            with open(os.path.join(mnt, "filler"), "wb") as f:
                try:
                    f.write(b"x" * free)
                except OSError:
                    pass
            real(tensors, name, metadata=metadata)
        checkpoints.save_file = filling
        try:
            save_checkpoint(ck, model(2), step=9)
        except OSError as err:
            assert err.errno == errno.ENOSPC, err
            assert "run.safetensors" in str(err) and "free some space" in str(err), err
            assert "left as it was" in str(err), err
            print("full during the save")
        checkpoints.save_file = real
        os.remove(os.path.join(mnt, "filler"))
        assert (open(ck, "rb").read(), open(ck + ".json", "rb").read()) == before
        assert sorted(os.listdir(mnt)) == ["run.safetensors", "run.safetensors.json"]
        print("intact")
    """)
    assert out.split() == ["refused", "early", "full", "during", "the", "save", "intact"]


# ------------------------------------------------------------------ a read-only disk
def test_read_only_disk_is_found_before_training_and_loses_nothing(tmp_path):
    out = _on_tmpfs(tmp_path, """
        import errno, subprocess
        mnt = sys.argv[1]
        ck = os.path.join(mnt, "run.safetensors")
        fit(model(0), loss, data(), steps=2, batch_size=4, checkpoint=ck, progress=False)
        before = open(ck, "rb").read()
        subprocess.run(["mount", "-o", "remount,ro", mnt], check=True)
        steps = []
        for target, resume in (("new.safetensors", False), ("run.safetensors", True)):
            try:
                fit(model(1), loss, data(), steps=4, batch_size=4, resume=resume,
                    checkpoint=os.path.join(mnt, target), progress=False,
                    callback=lambda s, v: steps.append(s))
            except OSError as err:
                assert err.errno == errno.EROFS and "read-only file system" in str(err), err
                assert target in str(err) and "writable disk" in str(err), err
                print("refused", target)
        assert steps == []
        try:
            save_checkpoint(ck, model(1))
        except OSError as err:
            assert err.errno == errno.EROFS and "left as it was" in str(err), err
            print("save refused")
        assert open(ck, "rb").read() == before
        print(load_checkpoint(ck, model(3)).step)
    """)
    assert out.split() == ["refused", "new.safetensors", "refused", "run.safetensors", "save",
                           "refused", "2"]


# ------------------------------------------------------------------ kill -9
def test_run_killed_mid_fit_resumes_bit_for_bit(tmp_path):
    """SIGKILL during fit (not a Python exception: nothing can clean up), then resume."""
    run = """
        ck, mode = sys.argv[1], sys.argv[2]
        def die(step, value):
            if mode == "killed" and step == 23:
                os.kill(os.getpid(), 9)
        h = fit(model(0), loss, data(), steps=40, batch_size=4, seed=7, checkpoint=ck,
                checkpoint_every=5, progress=False, callback=die, resume=mode == "resumed")
        print(len(h.losses))
    """
    killed, full = tmp_path / "killed.safetensors", tmp_path / "full.safetensors"
    result = _python(run, killed, "killed")
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert read_checkpoint_info(killed).step == 20  # the last checkpoint before the kill
    assert _ok(_python(run, killed, "resumed")).split() == ["40"]
    assert _ok(_python(run, full, "full")).split() == ["40"]
    a, b = read_checkpoint_info(killed), read_checkpoint_info(full)
    assert a.step == b.step == 40 and a.history.losses == b.history.losses
    from safetensors.torch import load_file

    ta, tb = load_file(killed), load_file(full)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_saves_killed_at_random_moments_never_damage_the_checkpoint(tmp_path):
    """A child saves in a loop; SIGKILL hits it at random moments; the file always loads, and
    the next save removes the killed saves' temporary folders."""
    ck = tmp_path / "run.safetensors"
    from unet_edu.models import NaiveCNN

    save_checkpoint(ck, NaiveCNN(hidden=4, depth=2), step=0)
    loop = """
        ck = sys.argv[1]
        m = model(0, hidden=32, depth=3)
        print("ready", flush=True)
        step = 1
        while True:
            save_checkpoint(ck, m, step=step)
            step += 1
    """
    rng = __import__("random").Random(0)
    for _ in range(4):
        child = subprocess.Popen(_command(loop, ck), env=_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        child.kill()
        child.wait()
        info = read_checkpoint_info(ck)  # weights and metadata always readable
        load_checkpoint(ck)
        copy = sidecar_path(ck).read_text()
        assert '"step"' in copy  # the JSON copy is always a whole file too
    save_checkpoint(ck, NaiveCNN(hidden=4, depth=2), step=info.step + 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.safetensors",
                                                         "run.safetensors.json"]


# ------------------------------------------------------------------ two processes, one path
def test_two_processes_saving_to_one_path_never_break_each_other(tmp_path):
    ck = tmp_path / "run.safetensors"
    writer = """
        ck, seed = sys.argv[1], int(sys.argv[2])
        m = model(seed, hidden=8)
        for i in range(40):
            save_checkpoint(ck, m, step=seed * 1000 + i)
        print("done")
    """
    children = [subprocess.Popen(_command(writer, ck, seed), env=_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outputs = [c.communicate(timeout=300) for c in children]
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0 and out.strip() == "done", err
    info = read_checkpoint_info(ck)
    assert info.step in (1039, 2039)
    import json

    assert json.loads(sidecar_path(ck).read_text())["step"] == info.step  # one save's pair
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.safetensors",
                                                         "run.safetensors.json"]


def test_a_live_save_keeps_its_temporary_folder_and_a_dead_one_loses_it(tmp_path):
    import unet_edu._safe_write as safe_write

    target = tmp_path / "run.safetensors"
    with safe_write._TempFolder(target) as live:  # this process is alive and holds the lock
        dead = _python("""
            import unet_edu._safe_write as safe_write
            from pathlib import Path
            folder = safe_write._TempFolder(Path(sys.argv[1]))
            folder.__enter__()
            print(folder.path.name, flush=True)
            os.kill(os.getpid(), 9)
        """, target)
        assert dead.returncode == -signal.SIGKILL
        abandoned = tmp_path / dead.stdout.strip()
        assert abandoned.is_dir() and live.path.is_dir()
        _ok(_python("""
            import unet_edu._safe_write as safe_write
            from pathlib import Path
            safe_write._remove_abandoned(Path(sys.argv[1]))
        """, target))
        assert live.path.is_dir() and not abandoned.exists()
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ permissions (as a user)
@pytest.fixture
def shared_dir():
    """A folder another user can reach (pytest's own folders are private to their owner)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="unet-edu-perm-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _as_user(code: str, *args) -> str:
    """Run ``code`` as an unprivileged user: as root the kernel ignores permission bits, so a
    root test would prove nothing about them.  The child starts as root (so it can load
    Python and torch from wherever they are installed) and drops to 'nobody' before ``code``."""
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("nobody")
        except (ImportError, KeyError):
            pytest.skip("running as root and there is no 'nobody' user to drop to")
        code = textwrap.dedent("""
            import pwd
            fit(model(), loss, data(), steps=1, batch_size=2, progress=False)  # lazy imports
            nobody = pwd.getpwnam("nobody")
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
        """) + textwrap.dedent(code)
    return _ok(_python(code, *args))


def test_permission_problems_are_named_before_training(shared_dir):
    from unet_edu.models import NaiveCNN

    locked = shared_dir / "locked"
    locked.mkdir()
    save_checkpoint(locked / "old.safetensors", NaiveCNN(hidden=4, depth=2), step=3)
    unreadable = shared_dir / "secret.safetensors"
    save_checkpoint(unreadable, NaiveCNN(hidden=4, depth=2), step=5)
    unreadable.chmod(0o000)
    locked.chmod(0o555)
    out = _as_user("""
        import errno
        folder = sys.argv[1]
        steps = []
        try:
            fit(model(0), loss, data(), steps=3, batch_size=4, progress=False,
                checkpoint=os.path.join(folder, "locked", "run.safetensors"),
                callback=lambda s, v: steps.append(s))
        except PermissionError as err:
            assert "permission denied in" in str(err) and "locked" in str(err), err
            assert steps == []
            print("folder")
        try:
            load_checkpoint(os.path.join(folder, "secret.safetensors"))
        except PermissionError as err:
            assert "permission denied (mode 000)" in str(err), err
            assert "may be fine" in str(err) and "No such file" not in str(err), err
            print("unreadable")
        try:
            save_checkpoint(os.path.join(folder, "locked", "old.safetensors"), model(1))
        except PermissionError as err:
            assert "not writable for you" in str(err) and "another name" in str(err), err
            print("protected")
    """, shared_dir)
    assert out.split() == ["folder", "unreadable", "protected"]
    assert read_checkpoint_info(locked / "old.safetensors").step == 3
