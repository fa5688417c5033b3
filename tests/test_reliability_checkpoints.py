"""No checkpoint is ever lost: name clashes, failed and killed saves, diverging runs."""

import json
import os
import random

import pytest
import torch

import unet_edu._safe_write as safe_write
import unet_edu.checkpoints as checkpoints
from unet_edu.models import NaiveCNN
from unet_edu.train import fit, load_checkpoint, save_checkpoint, sidecar_path


def _model(seed=0):
    torch.manual_seed(seed)
    return NaiveCNN(in_channels=1, hidden=4, depth=2)


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(16, 1, 8, 8, generator=g)


def _loss(model, batch, gen):
    (x,) = batch
    return ((model(x) - x) ** 2).mean()


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------ names never collide
def test_json_path_is_refused_so_the_copy_cannot_overwrite_the_weights(tmp_path):
    with pytest.raises(ValueError, match=r"model.json ends in .json.*use model.safetensors"):
        save_checkpoint(tmp_path / "model.json", _model())
    assert _files(tmp_path) == []


def test_versions_of_one_run_get_their_own_json_copy(tmp_path):
    a, b = _model(0), _model(1)
    save_checkpoint(tmp_path / "run.v1", a, step=1)
    save_checkpoint(tmp_path / "run.v2", b, step=2)
    assert _files(tmp_path) == ["run.v1", "run.v1.json", "run.v2", "run.v2.json"]
    assert json.loads((tmp_path / "run.v1.json").read_text())["step"] == 1
    assert json.loads((tmp_path / "run.v2.json").read_text())["step"] == 2
    assert load_checkpoint(tmp_path / "run.v1")[1].step == 1
    assert sidecar_path(tmp_path / "m.safetensors").name == "m.safetensors.json"


def test_directory_as_path_names_it(tmp_path):
    with pytest.raises(ValueError, match=r"is a directory; give a file name"):
        save_checkpoint(tmp_path, _model())
    with pytest.raises(ValueError, match=r"is a directory, not a file"):
        load_checkpoint(tmp_path)


# ------------------------------------------------------------------ saves are one unit
def test_failed_json_write_replaces_neither_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.safetensors", _model(0), step=1)
    weights, copy = path.read_bytes(), sidecar_path(path).read_bytes()

    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safe_write.Path, "write_text", fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _model(1), step=2)
    assert path.read_bytes() == weights and sidecar_path(path).read_bytes() == copy
    assert _files(tmp_path) == ["m.safetensors", "m.safetensors.json"]


def test_failed_final_rename_puts_the_old_json_copy_back(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.safetensors", _model(0), step=1)
    weights, copy = path.read_bytes(), sidecar_path(path).read_bytes()
    real = os.replace

    def replace(src, dst):
        if str(dst) == str(path):
            raise OSError("rename failed")
        real(src, dst)

    monkeypatch.setattr(safe_write.os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        save_checkpoint(path, _model(1), step=2)
    assert path.read_bytes() == weights and sidecar_path(path).read_bytes() == copy
    assert _files(tmp_path) == ["m.safetensors", "m.safetensors.json"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("where", ["while writing the weights", "between the two renames"])
def test_save_killed_midway_keeps_the_previous_checkpoint_byte_for_byte(tmp_path, where):
    path = save_checkpoint(tmp_path / "m.safetensors", _model(0), step=1)
    before = path.read_bytes()
    pid = os.fork()
    if pid == 0:  # the child dies in the middle of a save, as a killed process would
        try:
            if where == "while writing the weights":
                def half_write(tensors, tmp, metadata):
                    with open(tmp, "wb") as f:
                        f.write(b"\x08\x00\x00")
                    os._exit(9)
                checkpoints.save_file = half_write
            else:
                real = os.replace

                def replace(src, dst):
                    if str(dst) == str(path):
                        os._exit(9)
                    real(src, dst)
                safe_write.os.replace = replace
            save_checkpoint(path, _model(1), step=2)
        finally:
            os._exit(3)  # not reached when the kill happened
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 9
    assert path.read_bytes() == before
    assert load_checkpoint(path, _model(2)).step == 1
    assert any(name.endswith(".partial") for name in _files(tmp_path))  # the killed save's debris
    save_checkpoint(path, _model(1), step=2)  # the next save removes it
    assert _files(tmp_path) == ["m.safetensors", "m.safetensors.json"]
    assert load_checkpoint(path, _model(2)).step == 2


# ------------------------------------------------------------------ damaged files
@pytest.mark.parametrize("damage", ["empty", "truncated", "random"])
def test_damaged_checkpoint_names_the_file_and_the_fix(tmp_path, damage):
    path = save_checkpoint(tmp_path / "m.safetensors", _model())
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2],
                      "random": random.Random(0).randbytes(300)}[damage])
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*m\.safetensors.*save it again"):
        load_checkpoint(path)


# ------------------------------------------------------------------ diverging runs
def test_nan_run_stops_and_the_good_checkpoint_survives_byte_for_byte(tmp_path):
    ck = tmp_path / "run.safetensors"
    fit(_model(), _loss, _data(), steps=3, batch_size=4, checkpoint=ck, progress=False)
    good, good_copy = ck.read_bytes(), sidecar_path(ck).read_bytes()
    bad = _data()
    bad[:] = float("nan")
    seen = []
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 4.*left as it was"):
        fit(_model(), _loss, bad, steps=8, batch_size=4, checkpoint=ck, checkpoint_every=1,
            resume=True, progress=False, callback=lambda s, v: seen.append(s))
    assert seen == []  # stopped at the first non-finite loss
    assert ck.read_bytes() == good and sidecar_path(ck).read_bytes() == good_copy


def test_non_finite_weights_are_never_saved(tmp_path):
    ck = tmp_path / "run.safetensors"
    m = _model()
    fit(m, _loss, _data(), steps=2, batch_size=4, checkpoint=ck, progress=False)
    good = ck.read_bytes()

    def poison(step, loss):  # weights blow up although the loss of this step was finite
        with torch.no_grad():
            next(m.parameters()).fill_(float("inf"))

    with pytest.raises(FloatingPointError, match=r"refusing to save .*run\.safetensors"):
        fit(m, _loss, _data(), steps=4, batch_size=4, checkpoint=ck, checkpoint_every=1,
            resume=True, progress=False, callback=poison)
    assert ck.read_bytes() == good


# ------------------------------------------------------------------ resuming
def test_resume_with_fewer_steps_than_saved_is_an_error_not_a_relabel(tmp_path):
    ck = tmp_path / "run.safetensors"
    fit(_model(), _loss, _data(), steps=6, batch_size=4, checkpoint=ck, progress=False)
    before = ck.read_bytes()
    with pytest.raises(ValueError, match=r"already at step 6, past steps=3.*steps=6 or more"):
        fit(_model(), _loss, _data(), steps=3, batch_size=4, checkpoint=ck, resume=True,
            progress=False)
    assert ck.read_bytes() == before


def test_resume_uses_the_new_learning_rate(tmp_path):
    ck = tmp_path / "run.safetensors"
    fit(_model(), _loss, _data(), steps=2, batch_size=4, lr=1e-2, checkpoint=ck, progress=False)
    fit(_model(), _loss, _data(), steps=3, batch_size=4, lr=1e-4, checkpoint=ck, resume=True,
        progress=False)
    groups = json.loads(sidecar_path(ck).read_text())["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == [1e-4]
