"""Explorers with bad input: each case ends in an error that names the value and the fix, or in
the documented conversion (NumPy arrays, 8-bit pictures)."""

import numpy as np
import pytest
import torch

from unet_edu.diffusion import NoiseSchedule
from unet_edu.models import AttentionUNet, DiffusionUNet, NaiveCNN, UNet2015
from unet_edu.widgets.denoising import DenoisingExplorer
from unet_edu.widgets.feature_maps import FeatureMapExplorer
from unet_edu.widgets.gates import GateExplorer, gate_frames
from unet_edu.widgets.inputs import accepts_side, as_pictures, nearest_sides
from unet_edu.widgets.receptive_field import ReceptiveFieldExplorer


def _naive():
    torch.manual_seed(0)
    return NaiveCNN(hidden=4, depth=3)


def _poisoned(model):
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    return model


def _with_nan(x, index):
    x = x.clone()
    x[index] = float("nan")
    return x


@pytest.fixture(scope="module")
def digits():
    return torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def gated():
    torch.manual_seed(0)
    return AttentionUNet(features=(4, 8))


# -- pictures that are not numbers -------------------------------------------------------------
def test_nan_pixels_are_refused_with_where_they_are(digits, gated):
    bad = _with_nan(digits, (1, 0, 3, 4))
    for build in (lambda: FeatureMapExplorer({"naive": _naive()}, bad),
                  lambda: ReceptiveFieldExplorer({"naive": _naive()}, bad[1], 2),
                  lambda: GateExplorer(gated, bad)):
        with pytest.raises(ValueError, match=r"1 NaN or infinite value\(s\), the first at index "
                                             r"\((1, )?0, 3, 4\).*torch.nan_to_num"):
            build()
    infinite = digits.clone()
    infinite[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        ReceptiveFieldExplorer({"naive": _naive()}, digits[0], 2, erf_inputs=infinite)


def test_a_nan_pixel_is_no_longer_reported_as_a_value_range(digits):
    with pytest.raises(ValueError) as err:
        FeatureMapExplorer({"naive": _naive()}, _with_nan(digits, (0, 0, 0, 0)))
    assert "value_range" not in str(err.value) and "NaN" in str(err.value)


def test_nan_masks_and_fractional_masks_are_refused(digits, gated):
    masks = (digits[:, 0] > 0.5).float()
    with pytest.raises(ValueError, match="masks holds 1 NaN"):
        GateExplorer(gated, digits, _with_nan(masks, (0, 1, 1)))
    with pytest.raises(ValueError, match="fractions"):
        GateExplorer(gated, digits, masks * 0.5)


# -- models that are not numbers ---------------------------------------------------------------
def test_a_model_with_nan_weights_is_named(digits, gated):
    for build in (lambda: FeatureMapExplorer({"my CNN": _poisoned(_naive())}, digits),
                  lambda: ReceptiveFieldExplorer({"my CNN": _poisoned(_naive())}, digits[0], 2)):
        with pytest.raises(ValueError, match=r"model 'my CNN' has 1 NaN or infinite value\(s\) "
                                             r"of \d+ in layers.0.weight.*retrain"):
            build()
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="NaN or infinite value.*checkpoint"):
        GateExplorer(_poisoned(AttentionUNet(features=(4, 8))), digits)


def test_a_nan_buffer_is_found_too(digits):
    torch.manual_seed(0)
    net = UNet2015(features=(2, 4), out_channels=1, norm="batch")
    buffer = next(b for name, b in net.named_buffers() if "running_var" in name)
    buffer[0] = float("inf")
    with pytest.raises(ValueError, match="running_var"):
        FeatureMapExplorer({"bn": net}, digits)


# -- the denoising explorer --------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_ddpm():
    torch.manual_seed(0)
    model = DiffusionUNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_classes=10,
                          norm_groups=4, num_heads=2, num_timesteps=20).eval()
    return model, NoiseSchedule("cosine", 20)


def test_a_model_without_its_schedule_is_refused_not_replaced(small_ddpm):
    model, schedule = small_ddpm
    with pytest.raises(ValueError, match="got a model but no schedule.*NoiseSchedule"):
        DenoisingExplorer(model)
    with pytest.raises(ValueError, match="got a schedule but no model"):
        DenoisingExplorer(schedule=schedule)


def test_a_segmentation_unet_is_not_called_unconditional(small_ddpm):
    with pytest.raises(ValueError) as err:
        DenoisingExplorer(UNet2015(features=(4, 8), out_channels=1), small_ddpm[1])
    message = str(err.value)
    assert "UNet2015" in message and "never sees t" in message and "DiffusionUNet" in message
    assert "unconditional" not in message


def test_the_denoising_explorer_checks_model_and_schedule(small_ddpm):
    model, schedule = small_ddpm
    with pytest.raises(ValueError, match=r"1 NaN or infinite value\(s\)"):
        DenoisingExplorer(_poisoned(DiffusionUNet(base_channels=8, channel_mult=(1, 2),
                                                  norm_groups=4, num_timesteps=20)), schedule)
    with pytest.raises(ValueError, match="num_timesteps=20 but the schedule has 1000"):
        DenoisingExplorer(model, NoiseSchedule("cosine", 1000), steps=4)
    with pytest.raises(ValueError, match="must be a NoiseSchedule"):
        DenoisingExplorer(model, "cosine")
    with pytest.raises(ValueError, match=r"labels \[10\] are not classes"):
        DenoisingExplorer(model, schedule, steps=2, labels=[1, 10])
    with pytest.raises(ValueError, match="finite and at least 0"):
        DenoisingExplorer(model, schedule, steps=2, guidance_scales=[1.0, float("nan")])


def test_a_text_conditioned_model_is_refused(small_ddpm):
    model = DiffusionUNet(base_channels=8, channel_mult=(1, 2), norm_groups=4, num_heads=2,
                          context_dim=16, num_timesteps=20)
    with pytest.raises(ValueError, match="text context"):
        DenoisingExplorer(model, small_ddpm[1])


# -- shapes and types --------------------------------------------------------------------------
def test_numpy_and_8_bit_pictures_are_converted(digits, gated):
    eight_bit = (digits * 255).round().to(torch.uint8)
    a = FeatureMapExplorer({"naive": _naive()}, digits.numpy())
    b = FeatureMapExplorer({"naive": _naive()}, eight_bit.numpy())
    assert torch.equal(a.images, digits)
    assert torch.allclose(b.images, eight_bit.float() / 255)
    rf = ReceptiveFieldExplorer({"naive": _naive()}, eight_bit[0], 2)
    assert rf.frames["naive"][0][0][0].startswith(b"\x89PNG")
    masks = (digits[:, 0] > 0.5)
    assert len(gate_frames(gated, digits.numpy(), masks.numpy())) == 2
    assert len(gate_frames(gated, eight_bit, masks.to(torch.uint8))) == 2  # labels stay 0/1
    with pytest.raises(ValueError, match="int64, whose scale is unknown.*float"):
        FeatureMapExplorer({"naive": _naive()}, digits.long())
    with pytest.raises(ValueError, match="must be a torch.Tensor or a NumPy array"):
        FeatureMapExplorer({"naive": _naive()}, digits.tolist())


def test_three_channel_pictures_name_the_conversion(digits, gated):
    colour = digits.repeat(1, 3, 1, 1)
    with pytest.raises(ValueError, match=r"takes 1 channel\(s\) but the images have 3.*"
                                         r"images.mean\(1, keepdim=True\)"):
        FeatureMapExplorer({"naive": _naive()}, colour)
    with pytest.raises(ValueError, match=r"the image has 3.*image.mean\(0, keepdim=True\)"):
        ReceptiveFieldExplorer({"naive": _naive()}, colour[0], 2)
    with pytest.raises(ValueError, match="takes 1 channel"):
        GateExplorer(gated, colour)


def test_sizes_a_model_cannot_take_name_the_nearest_that_it_can(gated):
    unet = UNet2015(features=(2, 4, 8), out_channels=1)
    with pytest.raises(ValueError, match=r"cannot take images of height 1 .*side of 4"):
        FeatureMapExplorer({"unet": unet}, torch.rand(1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"height 30 .*side of 28 or 32"):
        FeatureMapExplorer({"unet": unet}, torch.rand(1, 1, 30, 30))
    valid = UNet2015(features=(2, 4), out_channels=1, padding="valid")
    assert accepts_side(valid, 20) and not accepts_side(valid, 21)
    assert nearest_sides(valid, 21) == (20, 22)
    with pytest.raises(ValueError, match="cannot take images"):
        GateExplorer(gated, torch.rand(1, 1, 1, 1))
    # a plain stack of convolutions takes any size, a single pixel included
    one = FeatureMapExplorer({"naive": _naive()}, torch.rand(1, 1, 1, 1))
    assert one.frames[("naive", 0, "conv1")].shape == (4, 1, 1)
    with pytest.raises(ValueError, match=r"n=8 output pixels per side do not fit a 1 x 1 image"):
        ReceptiveFieldExplorer({"naive": _naive()}, torch.rand(1, 1, 1))


def test_masks_of_another_size_are_refused_not_resized(digits, gated):
    masks = (digits[:, 0] > 0.5).long()
    with pytest.raises(ValueError, match=r"masks are 8 x 8 but the images 16 x 16.*not resized"):
        GateExplorer(gated, digits, masks[:, :8, :8])
    with pytest.raises(ValueError, match="needs an AttentionUNet built with gates=True"):
        GateExplorer(AttentionUNet(features=(4, 8), gates=False), digits)


def test_counts_and_names_are_checked(digits):
    with pytest.raises(ValueError, match="max_maps must be a whole number of at least 1"):
        FeatureMapExplorer({"naive": _naive()}, digits, max_maps=0)
    with pytest.raises(ValueError, match="3 image names for 2 images"):
        FeatureMapExplorer({"naive": _naive()}, digits, image_names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"layers names models \['unet'\]"):
        FeatureMapExplorer({"naive": _naive()}, digits, layers={"unet": ["enc0"]})
    with pytest.raises(ValueError, match="reads the layers of a NaiveCNN or a UNet2015"):
        FeatureMapExplorer({"gated": AttentionUNet(features=(4, 8))}, digits)
    with pytest.raises(ValueError, match="at least one model"):
        FeatureMapExplorer({}, digits)


def test_as_pictures_keeps_good_input_as_it_is(digits):
    same = as_pictures(digits, "images", "here", 4)
    assert torch.equal(same, digits) and same.dtype == torch.float32
    assert as_pictures(digits[0, 0], "image", "here", 3).shape == (1, 16, 16)
    with pytest.raises(ValueError, match=r"for \(N, H, W\) use images\[:, None\]"):
        as_pictures(digits[:, 0], "images", "here", 4)
    with pytest.raises(ValueError, match=r"pass one picture of the batch, e.g. image\[0\]"):
        as_pictures(digits, "image", "here", 3)
    assert as_pictures(np.ones((2, 2), dtype=bool), "mask", "here", 3).dtype == torch.float32
