"""The shipped models load offline and do what they promise."""

import pytest
import torch

from unet_edu.diffusion import NoiseSchedule, ddim_sample
from unet_edu.metrics import DigitClassifier, classifier_features
from unet_edu.models import DiffusionUNet
from unet_edu.pretrained import available, load, path_of


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="digit-classifier.*digits-ddpm"):
        load("imagenet")


def test_files_are_small():
    for name in available():
        assert path_of(name).stat().st_size < 5_000_000


def test_readable_copy_matches_the_file_and_names_a_real_command():
    import json
    from pathlib import Path

    from unet_edu.train import read_checkpoint_info, sidecar_path

    root = Path(__file__).resolve().parents[1]
    for name in available():
        info = read_checkpoint_info(path_of(name))
        side = json.loads(sidecar_path(path_of(name)).read_text())
        assert side["extra"] == info.extra and side["step"] == info.step
        module = info.extra["command"].split()[2]  # "python -m <module> ..."
        assert (root / (module.replace(".", "/") + ".py")).exists(), module


def test_classifier_loads_and_recorded_accuracy():
    clf = load("digit-classifier", device="cpu")
    assert isinstance(clf.model, DigitClassifier) and not clf.model.training
    assert clf.info.extra["test_accuracy"] > 0.9


def test_ddpm_loads_with_schedule():
    ddpm = load("digits-ddpm", device="cpu")
    model, schedule = ddpm  # unpacks like a tuple
    assert isinstance(model, DiffusionUNet) and not model.training
    assert isinstance(schedule, NoiseSchedule) and schedule.num_steps == model.config["num_timesteps"]
    assert model.config["num_classes"] == 10
    extra = ddpm.info.extra
    assert {"wall_time_s", "final_loss", "training"} <= set(extra)
    assert extra["training"]["steps"] == ddpm.info.step > 0


def test_samples_are_classified_as_their_label():
    torch.manual_seed(0)
    model, schedule = load("digits-ddpm", device="cpu")
    clf = load("digit-classifier", device="cpu").model
    labels = torch.arange(50) % 10  # five of each digit
    x = ddim_sample(model, schedule, (50, 1, 28, 28), steps=20, y=labels, guidance_scale=2.0,
                    generator=torch.Generator().manual_seed(0), progress=False).x
    _, pred = classifier_features(clf, x, value_range=(-1, 1))
    rate = (pred == labels).float().mean().item()
    print(f"label consistency (DDIM-20, guidance 2, 50 samples): {rate:.2f}")
    # Chance is 0.1, and the classifier itself is right on about 95% of real test digits.
    # The shipped model (12,000 steps) scores 0.96 here.
    assert rate >= 0.85
