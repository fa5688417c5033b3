"""Damaged and crafted files are errors that name the file, found before anything is built or
changed; shipped files carry checksums."""

import json
import os
import time
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import unet_edu.pretrained as pretrained
from tools import checksums
from unet_edu.models import DiffusionUNet, NaiveCNN, UNet2015
from unet_edu.pretrained import snapshots, sweep
from unet_edu.train import fit, load_checkpoint, save_checkpoint


def _model(seed=0):
    torch.manual_seed(seed)
    return NaiveCNN(hidden=4, depth=2)


def _loss(model, batch, gen):
    (x,) = batch
    return ((model(x) - x) ** 2).mean()


@pytest.fixture
def good(tmp_path):
    """A checkpoint with optimizer and random state, as fit writes it."""
    path = tmp_path / "good.safetensors"
    fit(_model(), _loss, torch.rand(8, 1, 8, 8), steps=2, batch_size=4, checkpoint=path,
        progress=False)
    return path


def _parts(path):
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["unet_edu"]), {k: f.get_tensor(k) for k in f.keys()}


def _craft(path, meta, tensors):
    text = meta if isinstance(meta, str) else json.dumps(meta)
    save_file(tensors, str(path), metadata={"unet_edu": text})
    return path


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, before):
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ------------------------------------------------------------------ crafted configs
def test_an_oversized_config_is_refused_before_anything_is_allocated(good, tmp_path):
    meta, tensors = _parts(good)
    # Three layers of 10^6 channels: the middle convolution alone would need 36 TB.  The file
    # is refused within moments, so nothing of that size was ever allocated.
    huge = _craft(tmp_path / "huge.safetensors",
                  {**meta, "config": {**meta["config"], "hidden": 1_000_000, "depth": 3}}, tensors)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"huge.safetensors does not fit the NaiveCNN its config "
                                         r"describes: .*model.layers.0.weight has shape "
                                         r"\(4, 1, 3, 3\) in the file and \(1000000, 1, 3, 3\)"):
        load_checkpoint(huge)
    assert time.perf_counter() - start < 30


def test_a_config_that_builds_millions_of_layers_is_stopped_early(good, tmp_path):
    meta, tensors = _parts(good)
    deep = _craft(tmp_path / "deep.safetensors",
                  {**meta, "config": {**meta["config"], "depth": 5_000_000}}, tensors)
    with pytest.raises(ValueError, match=r"more parameters than the 4 tensors the file holds"):
        load_checkpoint(deep)


def test_a_diffusion_config_of_terabytes_is_refused(tmp_path):
    m = DiffusionUNet(base_channels=4, channel_mult=(1, 2), num_res_blocks=1, norm_groups=2,
                      num_heads=1, num_timesteps=10)
    path = save_checkpoint(tmp_path / "d.safetensors", m)
    meta, tensors = _parts(path)
    meta["config"].update(base_channels=2**20, norm_groups=2**10)
    with pytest.raises(ValueError, match=r"does not fit the DiffusionUNet its config describes"):
        load_checkpoint(_craft(path, meta, tensors))


@pytest.mark.parametrize("config, message", [
    ({"hidden": 4, "depth": 2, "weights": "x"}, r"NaiveCNN has no parameter weights"),
    ({"hidden": [[[[[4]]]]], "depth": 2}, r"nested more than 4 lists deep"),
    ({"hidden": {"a": 1}, "depth": 2}, r"a config holds numbers"),
    ({"hidden": "four", "depth": 2}, r"its config cannot build a NaiveCNN \(TypeError"),
])
def test_configs_that_no_constructor_wrote_are_refused(good, tmp_path, config, message):
    meta, tensors = _parts(good)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(_craft(tmp_path / "c.safetensors", {**meta, "config": config}, tensors))


# ------------------------------------------------------------------ tensors that do not fit
def _edit(tensors, key, value):
    return {**{k: v for k, v in tensors.items() if k != key}, **({key: value} if value is not None else {})}


@pytest.mark.parametrize("change, message", [
    ("transposed", r"model.layers.0.weight has shape \(1, 4, 3, 3\) in the file and \(4, 1, 3, 3\)"),
    ("extra", r"model.extra is not in"),
    ("missing", r"model.layers.2.bias is missing"),
    ("int64", r"model.layers.0.weight is torch.int64 in the file and torch.float32"),
    ("float16", r"model.layers.0.weight is torch.float16 in the file and torch.float32"),
    ("bool", r"model.layers.0.weight is torch.bool in the file"),
])
@pytest.mark.parametrize("with_model", [False, True])
def test_tensors_must_match_in_name_shape_and_dtype(good, tmp_path, change, message, with_model):
    meta, tensors = _parts(good)
    w = tensors["model.layers.0.weight"]
    tensors = {
        "transposed": lambda: _edit(tensors, "model.layers.0.weight", w.transpose(0, 1).contiguous()),
        "extra": lambda: _edit(tensors, "model.extra", torch.zeros(2)),
        "missing": lambda: _edit(tensors, "model.layers.2.bias", None),
        "int64": lambda: _edit(tensors, "model.layers.0.weight", w.long()),
        "float16": lambda: _edit(tensors, "model.layers.0.weight", w.half()),
        "bool": lambda: _edit(tensors, "model.layers.0.weight", w > 0),
    }[change]()
    path = _craft(tmp_path / "t.safetensors", meta, tensors)
    model = _model(5)
    before = _state(model)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path, model) if with_model else load_checkpoint(path)
    assert _unchanged(model, before)


def test_metadata_naming_another_model_is_refused(good, tmp_path):
    meta, tensors = _parts(good)
    path = _craft(tmp_path / "m.safetensors", {**meta, "model": "UNet2015"}, tensors)
    with pytest.raises(ValueError, match=r"UNet2015 has no parameter depth, hidden"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match=r"holds a UNet2015, not a NaiveCNN"):
        load_checkpoint(path, _model())


def test_half_precision_weights_load_into_a_model_converted_the_same_way(tmp_path):
    path = save_checkpoint(tmp_path / "h.safetensors", _model().half())
    model = _model(1).half()
    load_checkpoint(path, model)
    assert model.layers[0].weight.dtype == torch.float16


def test_nan_weights_in_a_file_are_refused(good, tmp_path):
    meta, tensors = _parts(good)
    bad = tensors["model.layers.0.weight"].clone()
    bad[0] = float("nan")
    path = _craft(tmp_path / "n.safetensors", meta, _edit(tensors, "model.layers.0.weight", bad))
    with pytest.raises(ValueError, match=r"holds NaN or infinite weights \(in layers.0.weight\)"):
        load_checkpoint(path)


# ------------------------------------------------------------------ optimizer and random states
def test_optimizer_state_of_another_model_is_refused_and_changes_nothing(good):
    model = _model(7)
    before = _state(model)
    other = UNet2015(features=(4, 8))
    with pytest.raises(ValueError, match=r"optimizer state for parameter groups of sizes \[4\], "
                                         r"but this optimizer has \[\d+\].*another model"):
        load_checkpoint(good, model, optimizer=torch.optim.AdamW(other.parameters()))
    assert _unchanged(model, before)


def test_optimizer_moments_of_the_wrong_shape_are_refused(good, tmp_path):
    meta, tensors = _parts(good)
    key = next(k for k in tensors if k.startswith("optim.") and k.endswith("exp_avg"))
    path = _craft(tmp_path / "o.safetensors", meta, _edit(tensors, key, torch.zeros(3)))
    model = _model(7)
    before = _state(model)
    with pytest.raises(ValueError, match=r"optimizer's exp_avg for a parameter of shape .* has "
                                         r"shape \(3,\)"):
        load_checkpoint(path, model, optimizer=torch.optim.AdamW(model.parameters()))
    assert _unchanged(model, before)


@pytest.mark.parametrize("damage, message", [
    (lambda m, t: ({**m, "history": [1, 2]}, t), r"history is not a dict"),
    (lambda m, t: ({**m, "history": {"steps": [1], "losses": []}}, t), r"two lists of equal length"),
    (lambda m, t: ({**m, "step": "3"}, t), r"step is '3', not a whole number"),
    (lambda m, t: ({**m, "step": True}, t), r"step is True"),
    (lambda m, t: ({**m, "extra": [1]}, t), r"extra is not a dict"),
    (lambda m, t: ({**m, "format": "other-9"}, t), r"format 'other-9'"),
    (lambda m, t: ({**m, "optimizer": {"param_groups": "x"}}, t), r"optimizer state is not"),
    (lambda m, t: (m, {**t, "rng.generator": torch.zeros(7, dtype=torch.uint8)}),
     r"random state rng.generator is torch.uint8 of shape \(7,\), not 5056 bytes"),
    (lambda m, t: (m, {**t, "weights.x": torch.zeros(1)}), r"tensors save_checkpoint never writes"),
    (lambda m, t: ("[" * 200_000 + "]" * 200_000, t), r"nested too deeply"),
    (lambda m, t: ('{"model": "NaiveCNN", "con', t), r"damaged metadata"),
])
def test_malformed_metadata_names_the_file(good, tmp_path, damage, message):
    meta, tensors = damage(*_parts(good))
    path = _craft(tmp_path / "bad.safetensors", meta, tensors)
    model, gen = _model(7), torch.Generator().manual_seed(3)
    before, gen_before = _state(model), gen.get_state()
    with pytest.raises(ValueError, match=rf"bad.safetensors.*{message}|{message}.*bad.safetensors"):
        load_checkpoint(path, model, optimizer=torch.optim.AdamW(model.parameters()),
                        generator=gen)
    assert _unchanged(model, before) and torch.equal(gen.get_state(), gen_before)


# ------------------------------------------------------------------ stored results
def test_truncated_snapshots_and_sweeps_name_the_file_and_the_command(tmp_path, monkeypatch):
    data = snapshots.SHIPPED.read_bytes()
    cut = tmp_path / "snap.safetensors"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"cannot read the snapshots in .*snap.safetensors.*"
                                         r"tools.ddpm_snapshots"):
        snapshots.load(cut)
    foreign = save_file({"images": torch.zeros(2, 3)}, str(tmp_path / "f.safetensors"),
                        metadata={"record": json.dumps({"rows": [{"step": 1}], "meta": {}})})
    assert foreign is None
    with pytest.raises(ValueError, match=r"holds images of shape \(2, 3\)"):
        snapshots.load(tmp_path / "f.safetensors")
    text = sweep.SHIPPED.read_text()
    (tmp_path / "sweep.json").write_text(text[: len(text) // 2])
    monkeypatch.setattr(sweep, "SHIPPED", tmp_path / "sweep.json")
    with pytest.raises(ValueError, match=r"cannot read the stored sweep .*sweep.json.*"
                                         r"tools.sampler_sweep"):
        sweep.shipped_results()
    (tmp_path / "sweep.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"is not a sweep"):
        sweep.shipped_results()


# ------------------------------------------------------------------ checksums
def test_every_shipped_file_is_listed_in_the_manifest_and_matches_it():
    problems = pretrained.check_manifest()
    assert problems == {"unlisted": [], "missing": [], "changed": []}, (
        f"{problems}: after a deliberate retrain, run python -m tools.checksums")
    assert len(pretrained.shipped_files()) > 10


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """The classifier's files in a folder of their own, with a manifest, standing in for the
    package's folder."""
    for name in ("digit-classifier.safetensors", "digit-classifier.safetensors.json"):
        (tmp_path / name).write_bytes((pretrained.HERE / name).read_bytes())
    monkeypatch.setattr(pretrained, "HERE", tmp_path)
    assert checksums.main(["--root", str(tmp_path)]) == 0
    return tmp_path


def test_a_flipped_byte_in_a_shipped_file_is_caught_on_load(shipped_copy, capsys):
    assert pretrained.load("digit-classifier", device="cpu").model is not None
    path = shipped_copy / "digit-classifier.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # one bit of the stored tensors: the file itself is still well formed
    path.write_bytes(bytes(data))
    with pytest.raises(pretrained.ChecksumError, match=r"digit-classifier.safetensors does not "
                                                       r"match its checksum in SHA256SUMS.*"
                                                       r"tools.checksums"):
        pretrained.load("digit-classifier", device="cpu")
    assert checksums.main(["--check", "--root", str(shipped_copy)]) == 1
    assert "changed: digit-classifier.safetensors" in capsys.readouterr().out


def test_unlisted_files_warn_and_the_maintainer_command_lists_them(shipped_copy, capsys):
    (shipped_copy / "runs").mkdir()
    new = shipped_copy / "runs" / "new.safetensors.json"
    new.write_text("{}")
    (shipped_copy / ".hidden.partial").mkdir()
    (shipped_copy / ".hidden.partial" / "x.json").write_text("{}")
    with pytest.warns(pretrained.ChecksumWarning, match=r"runs/new.safetensors.json is not listed"):
        pretrained.verify(new)
    assert checksums.main(["--check", "--root", str(shipped_copy)]) == 1
    assert "unlisted: runs/new.safetensors.json" in capsys.readouterr().out
    assert checksums.main(["--root", str(shipped_copy)]) == 0
    assert "added: runs/new.safetensors.json" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pretrained.verify(new)
    new.unlink()
    assert checksums.main(["--check", "--root", str(shipped_copy)]) == 1
    assert "missing: runs/new.safetensors.json" in capsys.readouterr().out


def test_each_file_is_hashed_once_until_it_changes(shipped_copy, monkeypatch):
    calls = []
    real = pretrained.file_sha256
    monkeypatch.setattr(pretrained, "file_sha256", lambda p: calls.append(p) or real(p))
    path = shipped_copy / "digit-classifier.safetensors"
    for _ in range(3):
        pretrained.verify(path)
    assert len(calls) == 1
    path.write_bytes(path.read_bytes())  # rewritten: a new modification time
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    pretrained.verify(path)  # same bytes, so it passes, but only after hashing them again
    assert len(calls) == 2


def test_a_missing_manifest_is_an_error_with_the_fix(shipped_copy):
    (shipped_copy / "SHA256SUMS").unlink()
    with pytest.raises(pretrained.ChecksumError, match=r"SHA256SUMS is missing.*reinstall"):
        pretrained.load("digit-classifier", device="cpu")


def test_files_outside_the_shipped_folder_are_not_checked(tmp_path):
    path = save_checkpoint(tmp_path / "mine.safetensors", _model())
    pretrained.verify(path)  # no manifest there, no error: only shipped files have checksums
