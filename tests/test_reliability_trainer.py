"""The shipped-model trainer keeps its weights, EMA and work log consistent across crashes."""

import pytest
import torch

import unet_edu.data
from tools import train_pretrained as tp
from unet_edu.train import load_checkpoint, read_checkpoint_info

TINY = dict(base_channels=4, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(),
            num_heads=1, num_classes=10, norm_groups=2)


@pytest.fixture
def tiny(monkeypatch):
    g = torch.Generator().manual_seed(0)
    digits = unet_edu.data.Digits(torch.rand(16, 1, 28, 28, generator=g),
                                  torch.randint(0, 10, (16,), generator=g), "random test digits")
    monkeypatch.setattr(unet_edu.data, "mnist", lambda split="train": digits)
    monkeypatch.setattr(tp, "DDPM_CONFIG", TINY)
    monkeypatch.setattr(tp, "DDPM_TRAINING", {**tp.DDPM_TRAINING, "num_timesteps": 10,
                                              "batch_size": 2})
    monkeypatch.setattr("unet_edu.runtime.device", lambda: torch.device("cpu"))


def test_stopped_and_resumed_run_ships_the_same_ema_as_an_uninterrupted_one(tiny, tmp_path):
    full = tp.train_ddpm(steps=4, chunk=2, out=tmp_path / "a", work=tmp_path / "wa")
    tp.train_ddpm(steps=2, chunk=2, out=tmp_path / "b", work=tmp_path / "wb")
    state = tmp_path / "wb" / "digits-ddpm-state.safetensors"
    assert read_checkpoint_info(state).step == 2  # weights, EMA and optimizer in one file
    assert sorted(p.name for p in (tmp_path / "wb").iterdir()) == [
        "digits-ddpm-log.json", "digits-ddpm-state.safetensors",
        "digits-ddpm-state.safetensors.json"]
    resumed = tp.train_ddpm(steps=4, chunk=2, out=tmp_path / "b", work=tmp_path / "wb",
                            resume=True)
    (a, ia), (b, ib) = load_checkpoint(full), load_checkpoint(resumed)
    assert ia.step == ib.step == 4
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k


def test_truncated_work_log_is_a_clear_error(tiny, tmp_path):
    tp.train_ddpm(steps=2, chunk=2, out=tmp_path, work=tmp_path / "w")
    log = tmp_path / "w" / "digits-ddpm-log.json"
    log.write_text(log.read_text()[:5])
    with pytest.raises(SystemExit, match=r"log .*digits-ddpm-log.json is damaged.*delete the log"):
        tp.train_ddpm(steps=4, chunk=2, out=tmp_path, work=tmp_path / "w", resume=True)


def test_resuming_a_working_checkpoint_without_ema_is_refused(tiny, tmp_path):
    from unet_edu.models import DiffusionUNet
    from unet_edu.train import save_checkpoint

    work = tmp_path / "w"
    old = DiffusionUNet(**TINY, num_timesteps=10)
    save_checkpoint(work / "digits-ddpm-state.safetensors", old, step=2)
    with pytest.raises(SystemExit, match=r"holds a DiffusionUNet, not the TrainingState"):
        tp.train_ddpm(steps=4, chunk=2, out=tmp_path, work=work, resume=True)


def test_a_working_checkpoint_is_never_thrown_away_without_being_asked(tiny, tmp_path):
    tp.train_ddpm(steps=2, chunk=2, out=tmp_path, work=tmp_path / "w")
    state = tmp_path / "w" / "digits-ddpm-state.safetensors"
    before = state.read_bytes()
    with pytest.raises(SystemExit, match=r"holds a run stopped at step 2; pass --resume to "
                                         r"continue it, or --restart to discard it"):
        tp.train_ddpm(steps=4, chunk=2, out=tmp_path, work=tmp_path / "w")
    assert state.read_bytes() == before
    tp.train_ddpm(steps=2, chunk=2, out=tmp_path, work=tmp_path / "w", restart=True)
    assert read_checkpoint_info(state).step == 2
    with pytest.raises(SystemExit) as err:
        tp.main(["digits-ddpm", "--resume", "--restart"])
    assert err.value.code == 2
