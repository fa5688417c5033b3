"""Writing files safely: a crash, a full disk or a kill never leaves half a file.

The private helpers behind :func:`unet_edu.checkpoints.save_checkpoint` and the package's other
stored files.  None of them knows what a file holds; they move bytes and check paths:

* **Atomic writes.**  ``_atomic_write`` writes one file, ``_write_pair`` a checkpoint and its
  readable JSON copy (:func:`sidecar_path`) as one unit.  Everything is written into a private
  temporary folder next to the target (``.<name>.<random>.partial``) and only then renamed into
  place; a write that raises replaces nothing.  A replaced file keeps its permissions; a new one
  gets the usual ones (the umask).
* **Locks.**  A temporary folder holds an advisory lock while the save that owns it lives
  (``_TempFolder``), and the kernel releases it when the process ends, however it ends.  So a
  later save removes a killed save's folder only once it is provably abandoned
  (``_remove_abandoned``), and saves into one folder take turns for their final renames
  (``_folder_lock``): processes saving to one path never remove each other's files.
* **Checks before the work.**  ``_check_can_save`` checks a usable name, a folder that is a
  folder, permission to write, a disk that is not read-only, files that may be replaced
  (write-protected ones never are) and enough free space, before any work that a failed save
  would lose; ``_explain`` turns an ``OSError`` into a message that names the path and the fix.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

try:  # advisory locks: how a save proves that another save's temporary folder is abandoned
    import fcntl
except ImportError:  # pragma: no cover - Windows: abandoned temporary folders are left alone
    fcntl = None


_TMP_SUFFIX = ".partial"
# ``.<name, shortened if need be>.<8 hex digits>.partial``: a save's private temporary folder.
_TEMP_FOLDER = re.compile(rf"^\.(?P<stem>.+)\.[0-9a-f]{{8}}{re.escape(_TMP_SUFFIX)}$")
_ENOSPC = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _path_argument(value, what: str) -> Path:
    """A file path given as ``str`` or :class:`os.PathLike`, as a :class:`~pathlib.Path`."""
    if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{what} must be a file path (a str or pathlib.Path), got "
                         f"{type(value).__name__} {value!r}")
    return Path(os.fspath(value))


def sidecar_path(path) -> Path:
    """The readable JSON copy of checkpoint ``path``: the full file name plus ``.json``.

    Keeping the whole name (``run.v1`` -> ``run.v1.json``) gives every checkpoint its own copy.
    """
    path = Path(path)
    return path.with_name(path.name + ".json")


def _os_error(err: OSError, message: str) -> OSError:
    """An error of ``err``'s type and errno (callers can still catch ``PermissionError``)
    that says ``message``."""
    new = type(err)(err.errno, message) if err.errno else type(err)(message)
    new.explained = True  # said plainly already: outer handlers pass it on unchanged
    return new


def _name_max(folder: Path) -> int:
    """The longest file name (in bytes) the file system of ``folder`` allows."""
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _check_checkpoint_path(path: Path) -> None:
    """The name must be usable: not ``.json``, not a folder, short enough for its JSON copy."""
    if path.suffix == ".json":
        raise ValueError(
            f"checkpoint path {path} ends in .json, the ending of the readable copies of "
            f"checkpoints; use {path.with_suffix('.safetensors').name}"
        )
    if path.is_dir():
        raise ValueError(f"checkpoint path {path} is a directory; give a file name such as "
                         f"{path / 'model.safetensors'}")
    size, limit = len(os.fsencode(sidecar_path(path).name)), _name_max(path.parent)
    if size > limit:
        raise ValueError(
            f"checkpoint name {path.name[:40]}... is {size - 5} bytes long; its readable copy "
            f"adds '.json' and this file system allows names of at most {limit} bytes: use a "
            f"name of at most {limit - 5} bytes")


def _link_target(path: Path, pair: bool = True) -> Path:
    """``path``, or the file a symbolic link at ``path`` points to (a save replaces the file,
    not the link).  A link that loops or points nowhere is an error that says so."""
    if not os.path.islink(path):
        return path
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{path} is a symbolic link that leads back to itself (a loop); "
                             f"remove it or pass another path") from err
        raise ValueError(f"{path} is a symbolic link to {os.readlink(path)}, which does not "
                         f"exist; point the link at a file, remove it, or pass another "
                         f"path") from err
    target = Path(os.path.realpath(path))
    if pair:
        _check_checkpoint_path(target)
    return target


def _existing_file(path: Path) -> bool:
    """Is there a checkpoint (a file, or a link to one) at ``path``?  Folders, broken or looping
    links and unreachable folders are errors, not "no checkpoint"."""
    path = _link_target(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    except NotADirectoryError as err:
        raise _os_error(err, f"{path} cannot exist: {_file_among_folders(path)} is a file, not "
                             f"a folder; choose another folder") from err
    except PermissionError as err:
        raise _os_error(err, f"cannot look for {path}: permission denied on its folder "
                             f"{path.parent}; make it readable or choose another "
                             f"folder") from err
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"checkpoint path {path} is a directory; give a file name such as "
                         f"{path / 'model.safetensors'}")
    return True


def _file_among_folders(path: Path) -> Path:
    """The ancestor of ``path`` that exists but is a file (used as if it were a folder)."""
    for parent in path.parents:
        if parent.exists():
            return parent if not parent.is_dir() else path.parent
    return path.parent


def _make_folder(path: Path) -> None:
    """Create the folder of ``path`` (and its parents), with errors that name the problem."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise _os_error(err, f"cannot save {path}: {_file_among_folders(path)} is a file, not "
                             f"a folder; choose another folder") from err
    except OSError as err:
        raise _explain(err, path, "create the folder of") from err


def _explain(err: OSError, path: Path, doing: str = "save", kept: bool = False) -> OSError:
    """``err`` (from writing ``path``) as a message that says what is wrong and what to do."""
    if getattr(err, "explained", False):
        return err
    folder = path.parent
    if err.errno in (errno.EACCES, errno.EPERM):
        why = (f"permission denied in {folder}: save to a folder you can write to, or change "
               f"its permissions")
    elif err.errno == errno.EROFS:
        why = f"{folder} is on a read-only file system: save to a folder on a writable disk"
    elif err.errno in _ENOSPC:
        why = f"no space left on the disk of {folder}: free some space or save to another disk"
    elif err.errno == errno.ENAMETOOLONG:
        why = "the name is too long for this file system: use a shorter file name"
    else:
        why = f"{err.strerror or err}"
    tail = "; the previous checkpoint was left as it was" if kept else ""
    return _os_error(err, f"cannot {doing} {path}: {why}{tail}")


def _check_replaceable(path: Path) -> None:
    """A save may replace ``path``: it is not a folder and not write-protected."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, f"cannot save: {path} is a folder; move it away "
                                              f"or save under another name")
    mode = stat.S_IMODE(st.st_mode)
    if st.st_mode & 0o222 and os.access(path, os.W_OK):
        return
    if _read_only_disk(path):
        raise _explain(OSError(errno.EROFS, "read-only"), path, kept=True)
    if not st.st_mode & 0o222:
        raise PermissionError(
            errno.EACCES, f"{path} is write-protected (mode {mode:03o}), so it is not replaced; "
                          f"make it writable (chmod u+w) if it may be, or save under another name")
    raise PermissionError(
        errno.EACCES, f"{path} is not writable for you (mode {mode:03o}, owner uid "
                      f"{st.st_uid}), so it is not replaced; save under another name")


def _read_only_disk(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):
        return False


def _lock(fd: int, wait: bool) -> bool:
    """Take the advisory lock on ``fd``; False when another process holds it (or, without
    waiting, when the file system cannot lock: then nothing counts as abandoned)."""
    if fcntl is None:
        return wait
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        return True
    except OSError:
        return wait


def _same_file(path, fd: int) -> bool:
    try:
        a, b = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


_OPEN_FOLDER = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


class _TempFolder:
    """A private temporary folder next to ``target``, locked while the save that owns it lives.

    The lock is released by the kernel when the process ends, however it ends; a folder whose
    lock can be taken is therefore provably abandoned (see :func:`_remove_abandoned`).  Its
    name is ``target``'s, shortened where needed so that it fits the file system's limit.
    """

    def __init__(self, target: Path):
        self.target = target
        self.path: Path | None = None
        self._fd: int | None = None

    def __enter__(self) -> "_TempFolder":
        folder = self.target.parent
        tail = f".{'0' * 8}{_TMP_SUFFIX}"
        room = _name_max(folder) - 1 - len(tail)
        stem = os.fsdecode(os.fsencode(self.target.name)[:room])
        for _ in range(64):
            path = folder / f".{stem}.{secrets.token_hex(4)}{_TMP_SUFFIX}"
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                continue
            fd = os.open(path, _OPEN_FOLDER)
            # Between mkdir and the lock another save may have judged the folder abandoned
            # and removed it; then it is no longer ours and we start again.
            if _lock(fd, wait=True) and _same_file(path, fd):
                self.path, self._fd = path, fd
                return self
            os.close(fd)
        raise FileExistsError(errno.EEXIST, f"could not create a temporary folder in {folder}")

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)  # still locked: nobody else touches it
        os.close(self._fd)

    def fresh_mode(self) -> int:
        """The permissions a new file gets in this folder (``0o666`` less the umask)."""
        probe = self.path / "mode"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        mode = stat.S_IMODE(os.stat(probe).st_mode)
        probe.unlink()
        return mode


def _remove_abandoned(target: Path) -> None:
    """Remove the temporary folders of saves of ``target`` whose process has died.

    Only folders whose lock can be taken are removed: a live save holds its lock, so two
    processes saving to one path never remove each other's files.
    """
    if fcntl is None:
        return
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        match = _TEMP_FOLDER.match(entry.name)
        if not match or not target.name.startswith(match["stem"]):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            fd = os.open(entry.path, _OPEN_FOLDER)
        except OSError:
            continue
        try:
            if _lock(fd, wait=False) and _same_file(entry.path, fd):
                shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(fd)


@contextmanager
def _folder_lock(folder: Path):
    """Saves into one folder take turns for their final renames, so two processes saving to
    one path leave a weights file and a JSON copy from the same save."""
    try:
        fd = os.open(folder, _OPEN_FOLDER)
    except OSError:
        fd = None
    try:
        if fd is not None:
            _lock(fd, wait=True)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _fsync(path, folder: bool = False) -> None:
    """Ask the disk to keep ``path`` (best effort: not every file system can)."""
    try:
        fd = os.open(path, _OPEN_FOLDER if folder else os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mode_of(path: Path, default: int) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return default


def _check_space(folder: Path, needed: int, path: Path, kept: bool = False) -> None:
    """Refuse early when ``folder``'s disk has less than ``needed`` bytes free."""
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return
    if usage.total and usage.free < needed:
        tail = "; the previous checkpoint was left as it was" if kept else ""
        raise _os_error(OSError(errno.ENOSPC, "no space"),
                        f"cannot save {path}: it needs about {needed / 1e6:.1f} MB and the disk "
                        f"of {folder} has {usage.free / 1e6:.1f} MB free; free some space or "
                        f"save to another disk{tail}")


def _check_can_save(path, size: int = 0, pair: bool = True, probe: bool = True) -> Path:
    """Everything a save of ``path`` needs, checked before any work that a failed save would
    lose: a usable name, a folder that is a folder, permission to write there, a disk that is
    not read-only, files that may be replaced and (if ``size`` is given) enough free space.

    Creating (and removing) the save's temporary folder is the test that counts: it fails
    exactly where the save would (a save itself skips it with ``probe=False``: its own
    temporary folder is the test).  ``pair`` is a checkpoint with its JSON copy (else one file).
    Returns the path a save will write (a link's target).
    """
    path = Path(path)
    if pair:
        _check_checkpoint_path(path)
    elif path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"cannot save: {path} is a folder; give a file name")
    path = _link_target(path, pair)
    _make_folder(path)
    for p in (path, sidecar_path(path)) if pair else (path,):
        _check_replaceable(p)
    if probe:
        try:
            with _TempFolder(path) as tmp:
                tmp.fresh_mode()
        except OSError as err:
            raise _explain(err, path) from err
    if size:
        _check_space(path.parent, size, path)
    return path


def _atomic_write(path, write) -> None:
    """Write one file through a temporary folder next to it, then rename it into place.

    ``write(tmp)`` writes the file at ``tmp``.  A replaced file keeps its permissions; a new
    one gets the umask's.
    """
    path = _check_can_save(path, pair=False, probe=False)
    _remove_abandoned(path)
    try:
        with _TempFolder(path) as tmp:
            mode = _mode_of(path, tmp.fresh_mode())
            out = tmp.path / "file"
            write(out)
            os.chmod(out, mode)
            _fsync(out)
            os.replace(out, path)
            _fsync(path.parent, folder=True)
    except OSError as err:
        raise _explain(err, path, kept=path.exists()) from err


def _write_pair(path: Path, write_weights, text: str, size: int) -> None:
    """Replace the weights file and its JSON copy as one unit.

    Both are written into the save's temporary folder first: if either write fails, nothing
    is replaced.  Then the JSON copy is renamed into place and the weights last, so an
    interruption between the two renames can only leave a new JSON copy next to the old,
    intact weights; if the final rename raises, the old JSON copy is put back.
    """
    path = _check_can_save(path, probe=False)
    side = sidecar_path(path)
    kept = path.exists()
    _check_space(path.parent, size, path, kept)
    _remove_abandoned(path)  # left behind by saves that were killed
    try:
        with _TempFolder(path) as tmp:
            fresh = tmp.fresh_mode()
            tmp_w, tmp_j = tmp.path / "weights", tmp.path / "copy.json"
            tmp_j.write_text(text)
            try:
                write_weights(tmp_w)
            except SafetensorError as err:
                # The library reports a full disk in its own words ("os error 28"): say it
                # plainly, as the OSError it is.
                code = re.search(r"os error (\d+)", str(err))
                if code is None:
                    raise
                raise _explain(OSError(int(code[1]), str(err)), path, kept=kept) from err
            os.chmod(tmp_w, _mode_of(path, fresh))
            os.chmod(tmp_j, _mode_of(side, fresh))
            _fsync(tmp_w)
            _fsync(tmp_j)
            with _folder_lock(path.parent):
                old_side = side.read_bytes() if side.is_file() else None
                os.replace(tmp_j, side)
                try:
                    os.replace(tmp_w, path)
                except BaseException:
                    if old_side is None:
                        side.unlink(missing_ok=True)
                    else:
                        (tmp.path / "old.json").write_bytes(old_side)
                        os.replace(tmp.path / "old.json", side)
                    raise
            _fsync(path.parent, folder=True)
    except OSError as err:
        raise _explain(err, path, kept=kept) from err
