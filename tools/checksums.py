"""Keep the checksum manifest of the shipped files: ``python -m tools.checksums``.

Every ``.safetensors`` and ``.json`` file under ``unet_edu/pretrained/`` (the shipped models,
their readable copies, the stored sweeps and snapshots, the experiment runs) is listed with
its SHA-256 in ``unet_edu/pretrained/SHA256SUMS``, and the package checks a file against it
whenever it loads one (see :mod:`unet_edu.pretrained`).

* ``python -m tools.checksums`` rewrites the manifest from the files as they are now.  Run it
  after a deliberate retrain (``tools.train_pretrained``, ``tools.train_experiments``,
  ``tools.sampler_sweep``, ``tools.ddpm_snapshots``); it prints what it added, changed and
  dropped, so an accidental change shows up in the review of that list.
* ``python -m tools.checksums --check`` changes nothing: it lists the files that are not in
  the manifest, missing or different, and exits with status 1 if there are any.

The manifest has the format of the ``sha256sum`` command, so
``cd unet_edu/pretrained && sha256sum -c SHA256SUMS`` checks it too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unet_edu import pretrained
from unet_edu._safe_write import _atomic_write


def current_sums(root: Path) -> dict:
    """``{relative path: sha256}`` of the shipped files under ``root`` as they are now."""
    return {rel: pretrained.file_sha256(root / rel) for rel in pretrained.shipped_files(root)}


def _old_sums(root: Path) -> dict:
    try:
        return pretrained.read_manifest(root)
    except pretrained.ChecksumError:  # missing or unreadable: everything counts as new
        return {}


def write(root: Path) -> dict:
    """Rewrite the manifest in ``root``; returns ``{"added", "changed", "dropped"}`` lists."""
    old, new = _old_sums(root), current_sums(root)
    text = "".join(f"{digest}  {rel}\n" for rel, digest in new.items())
    _atomic_write(root / pretrained.MANIFEST, lambda tmp: Path(tmp).write_text(text))
    return {"added": sorted(set(new) - set(old)),
            "changed": sorted(f for f in new if f in old and old[f] != new[f]),
            "dropped": sorted(set(old) - set(new))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.checksums",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true",
                   help="verify the shipped files against the manifest and change nothing")
    p.add_argument("--root", type=Path, default=pretrained.HERE,
                   help="the folder of the shipped files (default: unet_edu/pretrained)")
    args = p.parse_args(argv)
    if args.check:
        try:
            problems = pretrained.check_manifest(args.root)
        except pretrained.ChecksumError as err:
            print(err, file=sys.stderr)
            return 1
        for kind, files in problems.items():
            for f in files:
                print(f"{kind}: {f}")
        bad = sum(map(len, problems.values()))
        count = len(pretrained.shipped_files(args.root))
        print(f"{count} shipped files, {bad} problem(s)" + (
            "; after a deliberate retrain, run python -m tools.checksums" if bad else ""))
        return 1 if bad else 0
    changes = write(args.root)
    for kind, files in changes.items():
        for f in files:
            print(f"{kind}: {f}")
    print(f"wrote {args.root / pretrained.MANIFEST}: {len(pretrained.shipped_files(args.root))} "
          f"files ({', '.join(f'{len(v)} {k}' for k, v in changes.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
