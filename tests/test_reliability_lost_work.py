"""No run is lost or replaced silently, and a save that cannot work fails before the training."""

import json
import os
import stat

import pytest
import torch

from unet_edu.models import NaiveCNN
from unet_edu.pretrained import experiments as ex
from unet_edu.train import (History, fit, load_checkpoint, read_checkpoint_info,
                            save_checkpoint, sidecar_path)


def _model(seed=0):
    torch.manual_seed(seed)
    return NaiveCNN(hidden=4, depth=2)


def _data():
    return torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _loss(model, batch, gen):
    (x,) = batch
    return ((model(x) - x) ** 2).mean()


def _fit(path, steps=3, seen=None, **kwargs):
    callback = (lambda s, v: seen.append(s)) if seen is not None else None
    return fit(_model(kwargs.pop("seed", 0)), _loss, _data(), steps=steps, batch_size=4,
               checkpoint=path, progress=False, callback=callback, **kwargs)


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------ finished runs
def test_a_finished_run_is_not_replaced_by_a_new_one(tmp_path):
    ck = tmp_path / "run.safetensors"
    _fit(ck, steps=30)
    before = ck.read_bytes(), sidecar_path(ck).read_bytes()
    seen = []
    with pytest.raises(FileExistsError) as err:
        _fit(ck, steps=2, seen=seen, seed=1)
    message = str(err.value)
    assert "run.safetensors already holds a NaiveCNN run at step 30" in message
    assert "resume=True" in message and "overwrite=True" in message and "new checkpoint path" in message
    assert seen == [] and (ck.read_bytes(), sidecar_path(ck).read_bytes()) == before


def test_resuming_a_finished_run_loads_it_back_without_training_or_saving(tmp_path):
    ck = tmp_path / "run.safetensors"
    first = _fit(ck, steps=5)
    before = ck.read_bytes(), sidecar_path(ck).read_bytes()
    model, seen = _model(3), []
    history = fit(model, _loss, _data(), steps=5, batch_size=4, checkpoint=ck, resume=True,
                  progress=False, callback=lambda s, v: seen.append(s))
    assert seen == [] and history.losses == first.losses
    assert (ck.read_bytes(), sidecar_path(ck).read_bytes()) == before
    twin, _ = load_checkpoint(ck)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 twin.state_dict().values()))


def test_overwrite_true_replaces_a_run_on_purpose(tmp_path):
    ck = tmp_path / "run.safetensors"
    _fit(ck, steps=30)
    _fit(ck, steps=2, overwrite=True, seed=1)
    assert read_checkpoint_info(ck).step == 2


def test_a_file_that_is_not_a_checkpoint_is_not_replaced_either(tmp_path):
    notes = tmp_path / "notes.safetensors"
    notes.write_text("my notes")
    with pytest.raises(FileExistsError, match=r"notes.safetensors already holds a file that is "
                                              r"not a readable checkpoint.*overwrite=True"):
        _fit(notes)
    assert notes.read_text() == "my notes"


def test_write_protected_checkpoints_are_never_replaced(tmp_path):
    ck = tmp_path / "run.safetensors"
    _fit(ck, steps=4)
    ck.chmod(0o444)
    before = ck.read_bytes()
    with pytest.raises(PermissionError, match=r"run.safetensors is write-protected \(mode 444\).*"
                                              r"chmod u\+w.*another name"):
        save_checkpoint(ck, _model(1))
    seen = []
    with pytest.raises(PermissionError, match="write-protected"):
        _fit(ck, steps=2, overwrite=True, seen=seen)
    assert seen == [] and ck.read_bytes() == before
    ck.chmod(0o644)


# ------------------------------------------------------------------ permissions of the files
@pytest.fixture
def umask():
    """``os.umask``, with the process's umask put back after the test."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_new_files_follow_the_umask_and_replaced_files_keep_their_mode(tmp_path, umask):
    umask(0o027)
    ck = save_checkpoint(tmp_path / "run.safetensors", _model())
    assert _mode(ck) == _mode(sidecar_path(ck)) == 0o640
    umask(0o022)
    assert _mode(save_checkpoint(tmp_path / "b.safetensors", _model())) == 0o644
    ck.chmod(0o664)
    sidecar_path(ck).chmod(0o604)
    umask(0o077)
    save_checkpoint(ck, _model(1), step=2)
    assert _mode(ck) == 0o664 and _mode(sidecar_path(ck)) == 0o604


# ------------------------------------------------------------------ names and folders
def test_a_240_byte_name_works_and_a_name_too_long_for_its_copy_fails_before_training(tmp_path):
    name = "r" * 228 + ".safetensors"
    assert len(name.encode()) == 240
    _fit(tmp_path / name, steps=2)
    assert load_checkpoint(tmp_path / name)[1].step == 2
    assert _files(tmp_path) == [name, name + ".json"]
    long = "q" * 239 + ".safetensors"  # 251 bytes: its JSON copy would need 256
    seen = []
    with pytest.raises(ValueError, match=r"251 bytes long.*at most 255 bytes.*at most 250"):
        _fit(tmp_path / long, seen=seen)
    assert seen == []


@pytest.mark.parametrize("case", ["file as folder", "json name", "folder as file"])
def test_unusable_checkpoint_paths_fail_before_the_first_step(tmp_path, case):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "runs").mkdir()
    path, error, message = {
        "file as folder": (tmp_path / "notes.txt" / "run.safetensors", NotADirectoryError,
                           r"notes.txt is a file, not a folder"),
        "json name": (tmp_path / "run.json", ValueError, r"ends in .json.*run.safetensors"),
        "folder as file": (tmp_path / "runs", ValueError, r"is a directory"),
    }[case]
    seen = []
    with pytest.raises(error, match=message):
        _fit(path, seen=seen)
    assert seen == [] and _files(tmp_path) == ["notes.txt", "runs"]


def test_checkpoint_must_be_a_path():
    with pytest.raises(ValueError, match=r"checkpoint must be a file path.*got int 3"):
        _fit(3)


# ------------------------------------------------------------------ symbolic links
def test_looping_and_dangling_links_are_named_as_such(tmp_path):
    loop = tmp_path / "loop.safetensors"
    loop.symlink_to(loop.name)
    with pytest.raises(ValueError, match=r"symbolic link that leads back to itself"):
        load_checkpoint(loop)
    with pytest.raises(ValueError, match=r"symbolic link that leads back to itself"):
        _fit(loop, resume=True)
    dangling = tmp_path / "gone.safetensors"
    dangling.symlink_to("nowhere.safetensors")
    with pytest.raises(FileNotFoundError, match=r"symbolic link to nowhere.safetensors, which "
                                                r"does not exist"):
        load_checkpoint(dangling)
    with pytest.raises(ValueError, match=r"which does not exist"):
        _fit(dangling)


def test_saving_through_a_link_replaces_the_file_and_keeps_the_link(tmp_path):
    real = save_checkpoint(tmp_path / "v1.safetensors", _model(), step=1)
    link = tmp_path / "latest.safetensors"
    link.symlink_to(real.name)
    save_checkpoint(link, _model(1), step=2)
    assert link.is_symlink() and read_checkpoint_info(real).step == 2
    assert json.loads(sidecar_path(real).read_text())["step"] == 2


# ------------------------------------------------------------------ diverging runs say why
def test_weights_that_are_nan_before_training_are_refused_not_blamed_on_the_lr():
    model = _model()
    with torch.no_grad():
        model.layers[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"weights hold NaN or infinite values before "
                                                 r"the first step \(in layers.0.weight\).*load"):
        fit(model, _loss, _data(), steps=2, batch_size=4, progress=False)


def test_nan_in_the_data_blames_the_data():
    data = _data()
    data[:] = float("nan")
    with pytest.raises(FloatingPointError, match=r"batch drawn for this step holds NaN.*data\[0\] "
                                                 r"has 1024 in all.*data is to blame"):
        fit(_model(), _loss, data, steps=2, batch_size=4, progress=False)


def test_weights_broken_by_an_update_blame_the_update():
    model = _model()

    def overflow(step, loss):  # stands in for an update that overflowed
        if step == 2:
            with torch.no_grad():
                model.layers[2].bias.fill_(float("inf"))

    with pytest.raises(FloatingPointError, match=r"at step 3.*update of step 2 put NaN or "
                                                 r"infinite values into them \(layers.2.bias"):
        fit(model, _loss, _data(), steps=5, batch_size=4, progress=False, callback=overflow)


# ------------------------------------------------------------------ run names become paths
@pytest.mark.parametrize("experiment, variant, seed, message", [
    ("../../x", "a", 0, r"experiment name '../../x'"),
    ("tiny", "../a", 0, r"variant name '../a'"),
    ("tiny", "a/b", 0, r"variant name 'a/b'"),
    ("tiny", "a", -1, r"seed .* got -1"),
    ("tiny", "a", "0", r"seed .* got '0'"),
])
def test_save_run_refuses_names_that_would_leave_its_folder(tmp_path, experiment, variant, seed,
                                                            message):
    run = ex.Run(variant, seed, _model(), History([1], [1.0]), {"experiment": experiment})
    with pytest.raises(ValueError, match=message):
        ex.save_run(run, root=tmp_path / "inside")
    assert not (tmp_path / "inside").exists() and _files(tmp_path) == []
