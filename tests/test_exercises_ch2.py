"""Chapter 2's build-it checkers: DoubleConv, the centre crop, the forward pass, the weight map."""

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from unet_edu.exercises.chapter2 import (check_center_crop, check_double_conv,
                                         check_unet_forward, check_weight_map, unet_from_blocks)
from unet_edu.exercises.feedback import Feedback
from unet_edu.models import UNet2015


def verdict(feedback, status):
    """The feedback's text, after checking it is one line with this status."""
    assert isinstance(feedback, Feedback)
    assert "\n" not in str(feedback)
    assert feedback.status == status, str(feedback)
    return feedback.text


# -- DoubleConv -----------------------------------------------------------------------------
class Block(nn.Module):
    """The reference, written as a reader would: two named convolutions, functional ReLU."""

    def __init__(self, in_channels, out_channels, padding="same"):
        super().__init__()
        pad = 1 if padding == "same" else 0
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=pad)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=pad)

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x))))


class NoLastReLU(Block):
    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))


class SecondReadsInput(Block):
    def __init__(self, in_channels, out_channels, padding="same"):
        super().__init__(in_channels, out_channels, padding)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, padding=self.conv1.padding)


class AlwaysPadded(Block):
    def __init__(self, in_channels, out_channels, padding="same"):
        super().__init__(in_channels, out_channels, "same")


class WithBatchNorm(Block):
    def __init__(self, in_channels, out_channels, padding="same"):
        super().__init__(in_channels, out_channels, padding)
        self.bn = nn.BatchNorm2d(out_channels)


def test_reference_block_passes_and_builds_a_unet():
    assert "equals the package's DoubleConv" in verdict(check_double_conv(Block), "pass")
    torch.manual_seed(0)
    mine = unet_from_blocks(Block, features=(4, 8), out_channels=1)
    torch.manual_seed(0)
    theirs = UNet2015(features=(4, 8), out_channels=1)
    x = torch.randn(2, 1, 16, 16)
    assert isinstance(mine.down[0], Block) and torch.allclose(mine(x), theirs(x))


def test_unfilled_block_is_not_attempted():
    class MyDoubleConv(nn.Module):
        def __init__(self, in_channels, out_channels, padding="same"):
            super().__init__()
            raise NotImplementedError("fill in MyDoubleConv")

    class OnlyInit(nn.Module):  # layers made, forward never written
        def __init__(self, in_channels, out_channels, padding="same"):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    assert verdict(check_double_conv(MyDoubleConv), "todo")
    assert verdict(check_double_conv(OnlyInit), "todo")


def test_typical_wrong_blocks_get_their_own_hint():
    cases = {
        "a ReLU follows each convolution, the second one too": NoLastReLU,
        "it reads the first one's output": SecondReadsInput,
        "padding='valid' means no padding": AlwaysPadded,
        "no normalisation layer": WithBatchNorm,
    }
    for text, cls in cases.items():
        assert text in verdict(check_double_conv(cls), "hint")


def test_block_bad_input():
    assert "not an instance" in verdict(check_double_conv(Block(1, 2)), "error")
    assert "must take (in_channels, out_channels, padding)" in verdict(
        check_double_conv(type("Small", (nn.Module,), {"__init__": lambda self, c: None})),
        "error")

    class Raises(Block):
        def forward(self, x):
            return x.view(-1, 7)

    assert "`MyDoubleConv.forward` raised RuntimeError" in verdict(check_double_conv(Raises),
                                                                    "error")

    class ReturnsTuple(Block):
        def forward(self, x):
            return super().forward(x), x

    assert "returned a tuple" in verdict(check_double_conv(ReturnsTuple), "error")


# -- the centre crop ------------------------------------------------------------------------
def crop(x, height, width):
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top:top + height, left:left + width]


def test_reference_crop_passes():
    assert "equals the package's" in verdict(check_center_crop(crop), "pass")


def test_typical_wrong_crops_get_their_own_hint():
    def rounded_up(x, height, width):
        top, left = (x.shape[-2] - height + 1) // 2, (x.shape[-1] - width + 1) // 2
        return x[..., top:top + height, left:left + width]

    cases = {
        "one pixel off where H - height and W - width are odd": rounded_up,
        "top-left corner": lambda x, h, w: x[..., :h, :w],
        "height and width are swapped": lambda x, h, w: crop(x, w, h),
        "the last two axes (H, W) were not cropped":
            lambda x, h, w: x[(x.shape[0] - h) // 2:(x.shape[0] - h) // 2 + h],
    }
    for text, fn in cases.items():
        assert text in verdict(check_center_crop(fn), "hint")


def test_crop_bad_input():
    assert "pass the function" in verdict(check_center_crop(crop(torch.zeros(1, 1, 4, 4), 2, 2)),
                                          "error")
    assert "must return a torch.Tensor" in verdict(
        check_center_crop(lambda x, h, w: crop(x, h, w).numpy()), "error")
    assert "IndexError" in verdict(check_center_crop(lambda x, h, w: x[..., 99, :h, :w]), "error")


# -- the forward pass -----------------------------------------------------------------------
def forward(net, x, *, join="cat", order="skip-up", crop_fn=crop, head=True, reverse=True):
    skips, h = [], x
    for block in net.down:
        h = block(h)
        skips.append(h)
        h = net.pool(h)
    h = net.bottleneck(h)
    for up, block, skip in zip(net.up, net.decode, reversed(skips) if reverse else skips):
        h = up(h)
        s = crop_fn(skip, h.shape[-2], h.shape[-1])
        if join == "add":
            h = block(s + h)
        else:
            h = block(torch.cat([s, h] if order == "skip-up" else [h, s], dim=1))
    return net.head(h) if head else h


def test_reference_forward_passes_and_the_network_itself_is_refused():
    assert "equals net(x)" in verdict(check_unet_forward(forward), "pass")
    assert "build the pass from the network's parts" in verdict(
        check_unet_forward(lambda net, x: net(x)), "hint")


def test_typical_wrong_forward_passes_get_their_own_hint():
    cases = {
        "crop it to that size": lambda net, x: forward(net, x, crop_fn=lambda s, h, w: s),
        "the skip is added, not concatenated": lambda net, x: forward(net, x, join="add"),
        "concatenate [skip, up] in that order": lambda net, x: forward(net, x, order="up-skip"),
        "finish with net.head": lambda net, x: forward(net, x, head=False),
        "the last one stored comes first": lambda net, x: forward(net, x, reverse=False),
        "you resized the encoder map": lambda net, x: forward(
            net, x, crop_fn=lambda s, h, w: F.interpolate(s, size=(h, w), mode="bilinear")),
    }
    for text, fn in cases.items():
        assert text in verdict(check_unet_forward(fn), "hint")


def test_forward_bad_input():
    assert "must take (net, x)" in verdict(check_unet_forward(lambda x: x), "error")
    assert "must return a torch.Tensor" in verdict(
        check_unet_forward(lambda net, x: forward(net, x).tolist()), "error")


# -- the weight map -------------------------------------------------------------------------
def weight_map(instances, w0=10.0, sigma=5.0, *, border_on_cells=False, second=1,
               swap_classes=False):
    inst = instances.numpy()
    fg = inst > 0
    n, n_fg = inst.size, int(fg.sum())
    w = np.ones(inst.shape)
    if 0 < n_fg < n:
        cell, back = n / (2 * n_fg), n / (2 * (n - n_fg))
        w = np.where(fg, back, cell) if swap_classes else np.where(fg, cell, back)
    ids = np.unique(inst[fg])
    if len(ids) >= 2:
        d = np.sort(np.stack([ndimage.distance_transform_edt(inst != i) for i in ids]), axis=0)
        border = w0 * np.exp(-((d[0] + d[second]) ** 2) / (2 * sigma**2))
        w = w + (border if border_on_cells else np.where(fg, 0.0, border))
    return torch.from_numpy(w).float()


def test_reference_weight_map_passes():
    assert "equals the package's" in verdict(check_weight_map(weight_map), "pass")
    as_numpy = lambda inst, w0, sigma: weight_map(inst, w0, sigma).numpy()  # noqa: E731
    assert verdict(check_weight_map(as_numpy), "pass")


def test_typical_wrong_weight_maps_get_their_own_hint():
    def no_guard(instances, w0=10.0, sigma=5.0):
        inst = instances.numpy()
        fg = inst > 0
        w = np.where(fg, inst.size / (2 * fg.sum()), inst.size / (2 * (~fg).sum()))
        d = np.sort(np.stack([ndimage.distance_transform_edt(inst != i)
                              for i in np.unique(inst[fg])]), axis=0)
        return torch.from_numpy(w + np.where(fg, 0, w0 * np.exp(-(d[0] + d[1]) ** 2
                                                                / (2 * sigma**2))))

    def fixed_constants(instances, w0=10.0, sigma=5.0):
        return weight_map(instances)

    cases = {
        "on background pixels only": lambda i, w0, s: weight_map(i, w0, s, border_on_cells=True),
        "distance to the nearest cell twice": lambda i, w0, s: weight_map(i, w0, s, second=0),
        "the class weights are swapped": lambda i, w0, s: weight_map(i, w0, s, swap_classes=True),
        "no second-nearest cell": no_guard,
        "use the arguments w0 and sigma": fixed_constants,
    }
    for text, fn in cases.items():
        assert text in verdict(check_weight_map(fn), "hint")


def test_an_image_without_cells_must_weigh_one():
    def divides_by_zero(instances, w0=10.0, sigma=5.0):  # class weights without a guard
        inst = instances.numpy()
        fg = inst > 0
        with np.errstate(divide="ignore"):
            w = np.where(fg, inst.size / (2 * fg.sum()), inst.size / (2 * (~fg).sum()))
        return weight_map(instances, w0, sigma) if fg.any() else torch.from_numpy(w)

    def python_ints(instances, w0=10.0, sigma=5.0):
        n_fg = int((instances > 0).sum())
        scale = instances.numel() / (2 * n_fg)  # ZeroDivisionError on an empty image
        return weight_map(instances, w0, sigma) * scale / scale

    for fn in (divides_by_zero, python_ints):
        assert "an image with no cell has one class only" in verdict(check_weight_map(fn),
                                                                     "hint")


def test_weight_map_bad_input():
    assert "must take (instances, w0, sigma)" in verdict(check_weight_map(lambda i: i), "error")
    assert "returned shape" in verdict(check_weight_map(lambda i, w0, s: weight_map(i)[None]),
                                       "hint")
