"""The readable copy of a checkpoint summarises its loss history: the history is stored once."""

import json
import shutil
from pathlib import Path

from safetensors import safe_open

from tools import slim_records
from unet_edu.checkpoints import History, readable_record, read_checkpoint_info, save_checkpoint
from unet_edu.checkpoints import sidecar_path
from unet_edu.models import NaiveCNN

PRETRAINED = Path(__file__).resolve().parents[1] / "unet_edu" / "pretrained"


def _tiny():
    return NaiveCNN()


def test_the_readable_copy_summarises_the_history_the_weights_file_holds_it(tmp_path):
    losses = [1.0 / (1 + i) for i in range(300)]
    path = save_checkpoint(tmp_path / "run.safetensors", _tiny(), step=300,
                           history=History(list(range(1, 301)), losses), extra={"lr": 0.1})
    side = json.loads(sidecar_path(path).read_text())
    assert "losses" not in side["history"] and side["history"]["recorded_steps"] == 300
    assert side["history"]["first_step"] == 1 and side["history"]["last_step"] == 300
    assert abs(side["history"]["mean_loss_last_100"] - sum(losses[-100:]) / 100) < 1e-12
    assert side["extra"] == {"lr": 0.1} and side["step"] == 300
    assert read_checkpoint_info(path).history.losses == losses  # the full history, once
    assert len(sidecar_path(path).read_bytes()) < 2000


def test_slim_records_rewrites_old_copies_and_never_the_weights(tmp_path):
    path = save_checkpoint(tmp_path / "a" / "run.safetensors", _tiny(), step=5,
                           history=History([1, 2, 3, 4, 5], [5.0, 4.0, 3.0, 2.0, 1.0]))
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["unet_edu"])
    sidecar_path(path).write_text(json.dumps(meta, indent=1))  # an old copy: full history
    weights = path.read_bytes()
    assert slim_records.slim(tmp_path) == [sidecar_path(path)]
    assert sidecar_path(path).read_text() == readable_record(meta)
    assert slim_records.slim(tmp_path) == []  # already current
    assert path.read_bytes() == weights
    assert slim_records.main([str(tmp_path)]) == 0


def test_every_shipped_readable_copy_is_current():
    for path in sorted(PRETRAINED.rglob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            meta = (f.metadata() or {}).get("unet_edu")
        if meta is None:
            continue
        assert sidecar_path(path).read_text() == readable_record(json.loads(meta)), (
            f"{path.name}: run python -m tools.slim_records, then python -m tools.checksums")
