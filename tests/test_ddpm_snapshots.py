"""Snapshots of the shipped diffusion model's training: the tool, the trainer's option, the file."""

import pytest
import torch

from tools import ddpm_snapshots, train_pretrained
from unet_edu import pretrained
from unet_edu.models import DiffusionUNet
from unet_edu.pretrained import snapshots, sweep
from unet_edu.train import save_checkpoint


def test_shipped_snapshots_show_the_run_that_made_the_shipped_model():
    s = snapshots.load()
    shipped = pretrained.load("digits-ddpm", device="cpu")
    assert s.steps == sorted(set(s.steps)) and s.steps[-1] == shipped.info.step
    assert s.images.dtype == torch.uint8 and tuple(s.images.shape) == (len(s.steps), 20, 28, 28)
    assert s.as_float(0).shape == (20, 1, 28, 28) and 0 <= s.as_float(0).min() <= s.as_float(0).max() <= 1
    # The last snapshot is the shipped model, scored like the sweep's DDIM-20 row: same number.
    row = next(r for r in sweep.shipped_results()["rows"]
               if r["sampler"] == "ddim" and r["steps"] == 20 and r.get("spacing") == "trailing")
    assert s.rows[-1]["fd"] == pytest.approx(row["fd"], rel=1e-3)
    assert s.meta["score"]["n"] == row["n"] and s.meta["score"]["seed"] == 2


def test_load_names_the_command_when_the_file_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="tools.ddpm_snapshots"):
        snapshots.load(tmp_path / "none.safetensors")


def test_tool_needs_snapshots(tmp_path):
    with pytest.raises(SystemExit, match="--snapshots"):
        ddpm_snapshots.main(["--work", str(tmp_path), "--out", str(tmp_path / "s.safetensors")])


def test_tool_refuses_snapshots_of_another_run(tmp_path):
    torch.manual_seed(0)
    other = DiffusionUNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                          attention_levels=(1,), num_classes=10, norm_groups=4)
    save_checkpoint(tmp_path / "digits-ddpm-step00500.safetensors", other, step=500)
    out = tmp_path / "s.safetensors"
    with pytest.raises(SystemExit, match="not the shipped model"):
        ddpm_snapshots.main(["--work", str(tmp_path), "--out", str(out)])
    assert not out.exists()


@pytest.mark.parametrize("value", ["250", "500,x"])
def test_trainer_checks_snapshot_steps_before_training(value, capsys):
    with pytest.raises(SystemExit) as err:
        train_pretrained.main(["digits-ddpm", "--snapshots", value, "--chunk", "500"])
    assert err.value.code == 2 and "--snapshots" in capsys.readouterr().err
