"""Every mistake a learner is likely to make ends in a ValueError that names the fix."""

import pytest
import torch

from unet_edu.blocks import ResBlock
from unet_edu.diffusion import NoiseSchedule, ddim_sample, diffusion_loss, q_sample
from unet_edu.models import DiffusionUNet, UNet2015


def test_height_not_divisible_names_nearest_sizes():
    m = DiffusionUNet(base_channels=16, norm_groups=8)
    x = torch.randn(1, 1, 30, 28)
    with pytest.raises(ValueError, match=r"height 30 is not divisible by 4 .*use 28 or 32"):
        m(x, torch.tensor([1]))
    assert x.shape == (1, 1, 30, 28)  # the input is untouched


def test_unet2015_width_not_divisible():
    with pytest.raises(ValueError, match=r"width 50 is not divisible by 8 .*use 48 or 56"):
        UNet2015(features=(4, 8, 16, 32))(torch.randn(1, 1, 48, 50))


def test_unet2015_valid_padding_bad_size_suggests_valid_ones():
    m = UNet2015.paper().to("meta")
    with pytest.raises(ValueError, match=r"height 570 does not fit.*use 556 or 572"):
        m(torch.empty(1, 1, 570, 572, device="meta"))


def test_wrong_channel_count():
    with pytest.raises(ValueError, match=r"built for 1 input channel\(s\) but got 3; build it with in_channels=3"):
        DiffusionUNet(base_channels=16, norm_groups=8)(torch.randn(1, 3, 16, 16), torch.tensor([1]))


def test_missing_batch_dimension():
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        UNet2015(features=(4, 8))(torch.randn(1, 16, 16))


@pytest.mark.parametrize(
    "t,match",
    [
        (torch.tensor([1, 2, 3]), r"t must have shape \(2,\)"),
        (torch.tensor([[1], [2]]), r"t must have shape \(2,\)"),
        (None, r"needs the timestep t"),
    ],
)
def test_bad_timesteps(t, match):
    m = DiffusionUNet(base_channels=16, norm_groups=8)
    with pytest.raises(ValueError, match=match):
        m(torch.randn(2, 1, 16, 16), t)


def test_group_norm_groups_must_divide_channels():
    with pytest.raises(ValueError, match=r"GroupNorm with 32 groups cannot split 48 channels; use norm_groups=24"):
        ResBlock(48, 48, norm_groups=32)
    with pytest.raises(ValueError, match=r"norm_groups="):
        DiffusionUNet(base_channels=24, norm_groups=16)


def test_label_for_unconditional_model():
    m = DiffusionUNet(base_channels=16, norm_groups=8)
    with pytest.raises(ValueError, match=r"model is unconditional; build it with num_classes="):
        m(torch.randn(2, 1, 16, 16), torch.tensor([1, 2]), torch.tensor([3, 4]))


@pytest.mark.parametrize("t", [torch.tensor([5, 1000]), torch.tensor([-1, 3])])
def test_timesteps_out_of_range_are_refused_at_the_api(t):
    # The model's forward reads no tensor values (that would stall a GPU at every call): the
    # range of t is checked where timesteps enter, in q_sample, the loss and the samplers.
    with pytest.raises(ValueError, match=r"timesteps must lie in 0..999"):
        q_sample(NoiseSchedule(), torch.randn(2, 1, 16, 16), t)


def test_label_out_of_range_is_refused_by_loss_and_samplers():
    m = DiffusionUNet(base_channels=16, norm_groups=8, num_classes=10)
    x0, y = torch.rand(2, 1, 16, 16) * 2 - 1, torch.tensor([3, 11])
    with pytest.raises(ValueError, match=r"labels must lie in 0..9"):
        diffusion_loss(m, NoiseSchedule(), x0, y=y)
    with pytest.raises(ValueError, match=r"labels must lie in 0..9"):
        ddim_sample(m, NoiseSchedule(), (2, 1, 16, 16), steps=2, y=y, progress=False)


def test_attention_level_that_does_not_exist():
    with pytest.raises(ValueError, match=r"attention_levels \[3\] do not exist"):
        DiffusionUNet(attention_levels=(3,))


def test_heads_must_divide_channels():
    with pytest.raises(ValueError, match=r"cannot be split into 5 heads"):
        DiffusionUNet(base_channels=16, norm_groups=8, num_heads=5)
