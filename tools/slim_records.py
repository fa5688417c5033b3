"""Rewrite the readable JSON copies of shipped checkpoints from their weights files.

``python -m tools.slim_records [FOLDER]`` (default: ``unet_edu/pretrained``) finds every
``.safetensors`` checkpoint under the folder and writes its readable copy
(``<name>.safetensors.json``) again from the metadata inside the weights file, the way
:func:`unet_edu.checkpoints.save_checkpoint` now writes it: the loss history summarised, since
the weights file holds it in full.  The weights files are only read, never written.  A copy that
is already current is left alone; each new one replaces the old atomically.  Afterwards refresh
the checksum manifest with ``python -m tools.checksums``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from safetensors import safe_open

from unet_edu.checkpoints import readable_record, sidecar_path

ROOT = Path(__file__).resolve().parents[1]


def slim(folder: Path) -> list[Path]:
    """Rewrite the out-of-date readable copies under ``folder``; returns the ones rewritten."""
    changed = []
    for path in sorted(Path(folder).rglob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            meta = (f.metadata() or {}).get("unet_edu")
        if meta is None:  # not a checkpoint (e.g. stored samples): no readable copy to write
            continue
        side = sidecar_path(path)
        text = readable_record(json.loads(meta))
        if side.exists() and side.read_text() == text:
            continue
        fd, tmp = tempfile.mkstemp(dir=side.parent, prefix=f".{side.name}.", suffix=".partial")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
            if side.exists():
                os.chmod(tmp, side.stat().st_mode & 0o777)
            else:
                os.chmod(tmp, 0o644)
            os.replace(tmp, side)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        changed.append(side)
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.slim_records",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", default=str(ROOT / "unet_edu" / "pretrained"))
    args = p.parse_args(argv)
    folder = Path(args.folder)
    if not folder.is_dir():
        p.error(f"{folder} is not a folder")
    changed = slim(folder)
    print(f"rewrote {len(changed)} readable copies under {folder}; now run "
          f"python -m tools.checksums" if changed else f"all readable copies under {folder} "
          f"are current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
