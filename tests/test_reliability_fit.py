"""fit() refuses arguments that would train nothing, forever, or on nothing."""

import pytest
import torch

import unet_edu.pretrained as pretrained
from unet_edu.diffusion import NoiseSchedule, diffusion_loss
from unet_edu.models import DiffusionUNet, NaiveCNN
from unet_edu.train import fit


def _loss(model, batch, gen):
    (x,) = batch
    return ((model(x) - x) ** 2).mean()


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=-3), r"steps must be at least 0, got -3"),
    (dict(steps=2.5), r"steps must be a whole number, got 2.5; use steps=int"),
    (dict(steps=2, batch_size=0), r"batch_size must be at least 1, got 0"),
    (dict(steps=2, lr=float("nan")), r"lr must be a finite number >= 0, got nan"),
    (dict(steps=2, checkpoint_every=-1), r"checkpoint_every must be at least 0"),
])
def test_bad_fit_arguments_name_the_argument(kwargs, message):
    model = NaiveCNN(hidden=4, depth=2)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=message):
        fit(model, _loss, torch.rand(4, 1, 8, 8), progress=False, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_empty_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match=r"dataset is empty \(data of shape \(0, 1, 8, 8\)\)"):
        fit(NaiveCNN(hidden=4, depth=2), _loss, torch.rand(0, 1, 8, 8), steps=1, progress=False)


def test_whole_float_steps_are_accepted():
    hist = fit(NaiveCNN(hidden=4, depth=2), _loss, torch.rand(4, 1, 8, 8), steps=2.0,
               batch_size=2, progress=False)
    assert hist.steps == [1, 2]


def test_a_model_with_zero_classes_is_refused_with_the_fix():
    # num_classes=0 used to build a model that silently ignored its labels.
    with pytest.raises(ValueError, match=r"num_classes must be at least 1, got 0; use num_classes=None"):
        DiffusionUNet(base_channels=4, channel_mult=(1, 2), num_res_blocks=1, norm_groups=2,
                      num_heads=1, num_classes=0, num_timesteps=10)


def test_damaged_shipped_file_is_named(tmp_path, monkeypatch):
    good = pretrained.path_of("digit-classifier").read_bytes()
    damaged = tmp_path / "digit-classifier.safetensors"
    damaged.write_bytes(good[:100])
    monkeypatch.setattr(pretrained, "HERE", tmp_path)
    # listed as it is: the reader, not the checksum, must catch it
    (tmp_path / pretrained.MANIFEST).write_text(
        f"{pretrained.file_sha256(damaged)}  {damaged.name}\n")
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*digit-classifier.safetensors"):
        pretrained.load("digit-classifier", device="cpu")
