"""Segmentation scores refuse inputs that would give a plausible but wrong number."""

import pytest
import torch

from unet_edu.models import UNet2015
from unet_edu.segmentation import (boundary_accuracy, dice, iou, mirror_pad, overlap_tile_predict,
                                   separated_instances)


def test_mismatched_shapes_are_refused_not_broadcast():
    pred, target = torch.ones(2, 4, 4, dtype=torch.bool), torch.ones(4, 1, dtype=torch.bool)
    for score in (iou, dice, boundary_accuracy):
        with pytest.raises(ValueError, match=r"pred has shape \(2, 4, 4\) but target \(4, 1\)"):
            score(pred, target)


def test_logits_are_refused_with_the_fix():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 8, 8, generator=g) * 3
    mask = (torch.rand(1, 8, 8, generator=g) > 0.5).long()
    with pytest.raises(ValueError, match=r"look like logits.*torch.sigmoid\(pred\).*pred > 0"):
        dice(logits, mask)
    assert dice(torch.sigmoid(logits), mask) == dice(logits > 0, mask)  # both fixes agree


def test_probabilities_and_integer_masks_still_work():
    prob = torch.tensor([[0.2, 0.9], [0.7, 0.1]])
    assert iou(prob, torch.tensor([[0, 1], [1, 0]])) == 1.0


def test_separated_instances_needs_matching_shapes():
    with pytest.raises(ValueError, match=r"pred has shape \(4, 4\) but instances \(5, 5\)"):
        separated_instances(torch.ones(4, 4, dtype=torch.bool), torch.ones(5, 5, dtype=torch.long))


@pytest.mark.parametrize("pad", [-1, 1.5])
def test_mirror_pad_refuses_negative_or_fractional_pad(pad):
    with pytest.raises(ValueError, match=r"pad must be a whole number of at least 0"):
        mirror_pad(torch.zeros(1, 1, 4, 4), pad)


def test_overlap_tile_predict_checks_tile_and_image():
    model = UNet2015(features=(4, 8), padding="same").eval()
    with pytest.raises(ValueError, match=r"tile must be a whole number of at least 1, got 0"):
        overlap_tile_predict(model, torch.rand(1, 1, 8, 8), 0)
    with pytest.raises(ValueError, match=r"got \(1, 8, 8\); add the batch axis with image\[None\]"):
        overlap_tile_predict(model, torch.rand(1, 8, 8), 4)
