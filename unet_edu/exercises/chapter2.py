"""Chapter 2 — the U: encoder, decoder, skip connections.  Checkers for the exercises.

The arithmetic exercises (``check_output_size``, ...) compute the right number with the
package (never a stored number), compare it with yours, and print a verdict (they return
None).  The build-it exercises run code you write against the package's own:

* :func:`check_double_conv` -- your ``DoubleConv`` class (two 3x3 convolutions with ReLU);
* :func:`check_center_crop` -- your centre crop, the paper's "copy and crop";
* :func:`check_unet_forward` -- your forward pass of the 2015 U-Net, from its parts;
* :func:`check_weight_map` -- your pixel weights of the 2015 loss.

They return one line of :class:`~unet_edu.exercises.feedback.Feedback`.
:func:`unet_from_blocks` builds a U-Net whose double convolutions are *your* class.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from . import verdict
from .chapter1 import copy_conv_weights
from .feedback import (Verdict, checker, close, hint, passed, require_callable,
                       require_class, require_signature, require_tensor, run)
from ..blocks import DoubleConv
from ..data import synthetic_cells, unet_weight_map
from ..models import UNet2015, center_crop, count_parameters

__all__ = [
    "check_output_size",
    "check_concat_channels",
    "check_parameter_count",
    "check_valid_input",
    "check_double_conv",
    "check_center_crop",
    "check_unet_forward",
    "check_weight_map",
    "unet_from_blocks",
]


def check_output_size(input_size: int, answer, levels: int = 5) -> None:
    """Output side of the ``padding="valid"`` U-Net with ``levels`` levels for an input side.

    Answer ``None`` if the input does not fit (a pooled size would be odd).
    """
    net = UNet2015(features=(1,) * levels, padding="valid")
    right = net.output_size(input_size)
    ok = (answer is None and right is None) or (answer is not None and right is not None and int(answer) == right)
    if right is None:
        lo, hi = net.valid_sizes_near(input_size)
        text = f"{input_size} does not fit; the nearest sizes that do are {lo} and {hi}."
    else:
        text = f"{input_size} -> {right}."
    verdict(ok, text, "every unpadded 3x3 convolution trims 2 pixels, a block trims 4; pooling "
                      "halves (and needs an even size); an up-convolution doubles.")


def check_concat_channels(features, level: int, answer: int) -> None:
    """Channels entering decoder level ``level`` after the concatenation (``UNet2015(features=...)``)."""
    net = UNet2015(features=tuple(features), skip="concat")
    j = net.levels - 2 - level
    if not 0 <= j < len(net.decode):
        raise ValueError(f"level must lie in 0..{net.levels - 2} for {len(features)} levels")
    right = net.decode[j][0].in_channels
    verdict(int(answer) == right, f"{right} channels: {right // 2} from the skip and {right // 2} "
            "from the up-convolution.", "the up-convolution halves the channels of the level "
            "below; the skip brings the encoder map of the same level.")


def check_parameter_count(features, skip: str, answer: int, in_channels: int = 1, out_channels: int = 2) -> None:
    """Parameters of ``UNet2015(in_channels, out_channels, features, skip=skip)``."""
    right = count_parameters(UNet2015(in_channels, out_channels, tuple(features), skip=skip))
    verdict(int(answer) == right, f"{right:,} parameters.",
            "only the first convolution of each decoder block changes with the skip: "
            "with concat it reads 2c channels, with add or none it reads c.")


def check_valid_input(n: int, answer: int, levels: int = 5) -> None:
    """The smallest input side >= ``n`` that the valid-padding U-Net accepts."""
    net = UNet2015(features=(1,) * levels, padding="valid")
    right = n if net.output_size(n) else net.valid_sizes_near(n)[1]
    verdict(int(answer) == right, f"{right} (output {net.output_size(right)}).",
            "walk down the encoder: after each block (-4) the size must be even to pool.")


# --------------------------------------------------------------------------------------------
# Build-it exercises
# --------------------------------------------------------------------------------------------
_BLOCK = "MyDoubleConv"
_CROP = "my_center_crop"
_FORWARD = "my_unet_forward"
_WEIGHTS = "my_weight_map"
_NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)


def _block_problem(block, convs, c_in, c_out, padding):
    """The first way a reader's block differs from DoubleConv in its layers, or None."""
    if any(isinstance(m, _NORMS) for m in block.modules()):
        return ("the 2015 block has no normalisation layer: leave BatchNorm out (the "
                "package adds it only when asked, with norm='batch')")
    if len(convs) != 2:
        return (f"your block has {len(convs)} nn.Conv2d layer(s); a double convolution has "
                f"two 3x3 convolutions, each followed by ReLU")
    for n, conv in enumerate(convs, 1):
        if tuple(conv.kernel_size) != (3, 3) or tuple(conv.stride) != (1, 1):
            return (f"convolution {n} is {conv.kernel_size[0]}x{conv.kernel_size[1]} with "
                    f"stride {conv.stride[0]}; both are 3x3 with stride 1")
    first, second = convs
    if (first.in_channels, first.out_channels) != (c_in, c_out):
        return (f"the first convolution maps {first.in_channels} -> {first.out_channels} "
                f"channels; it must map in_channels -> out_channels ({c_in} -> {c_out})")
    if (second.in_channels, second.out_channels) != (c_out, c_out):
        return (f"the second convolution maps {second.in_channels} -> "
                f"{second.out_channels} channels; it reads the first one's output, so "
                f"out_channels -> out_channels ({c_out} -> {c_out})")
    pad = {"same": 1, "valid": 0}[padding]
    for n, conv in enumerate(convs, 1):
        if tuple(conv.padding) != (pad, pad):
            if padding == "valid":
                return (f"padding='valid' means no padding (the paper's choice): convolution "
                        f"{n} has padding={conv.padding[0]}, so the block does not trim its "
                        f"4 pixels")
            return (f"padding='same' keeps the size: convolution {n} needs padding=1, it "
                    f"has padding={conv.padding[0]}")
        if conv.bias is None:
            return f"convolution {n} has no bias; the 2015 block keeps them (bias=True)"
    return None


@checker
def check_double_conv(MyDoubleConv):
    """Is ``MyDoubleConv(in_channels, out_channels, padding)`` the 2015 U-Net's block?

    Two 3x3 convolutions, each followed by ReLU; ``padding="same"`` keeps the size (padding
    1), ``"valid"`` trims 4 pixels (no padding).  The checker builds four blocks (1 -> 8 and
    2 -> 2 same, 3 -> 4 and 8 -> 16 valid), copies the package's
    :class:`~unet_edu.blocks.DoubleConv` weights into your convolutions, and compares outputs
    on batches of one and two images, square and odd-sized.
    """
    require_class(MyDoubleConv, _BLOCK)
    params = "(in_channels, out_channels, padding)"
    require_signature(MyDoubleConv, _BLOCK, (1, 8, "same"), params)
    for c_in, c_out, padding in ((1, 8, "same"), (3, 4, "valid"), (8, 16, "valid"),
                                 (2, 2, "same")):
        ran = run(MyDoubleConv, c_in, c_out, padding, what=_BLOCK)
        if not ran.ok:
            raise Verdict(ran.failure(f"{_BLOCK}({c_in}, {c_out}, {padding!r})"))
        block = ran.value.eval()
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        text = _block_problem(block, convs, c_in, c_out, padding)
        if text:
            raise Verdict(hint(text))
        reference = DoubleConv(c_in, c_out, padding).eval()
        copy_conv_weights(reference, block)
        gen = torch.Generator().manual_seed(c_in * 10 + c_out)
        for shape in ((2, c_in, 20, 20), (1, c_in, 13, 17)):
            x = torch.randn(shape, generator=gen)
            with torch.no_grad():
                out = run(block, x.clone(), what=f"{_BLOCK}.forward")
                if not out.ok:
                    raise Verdict(out.failure(f"{_BLOCK}.forward"))
                trim = 4 if padding == "valid" else 0
                want_shape = (shape[0], c_out, shape[2] - trim, shape[3] - trim)
                y = require_tensor(out.value, f"{_BLOCK}.forward", want_shape,
                                   "padding='valid' trims 4 pixels, 'same' none")
                want = reference(x)
                if close(y, want):
                    continue
                a, b = convs
                if close(y, b(torch.relu(a(x)))):
                    raise Verdict(hint("a ReLU follows each convolution, the second one too: "
                                       "your output has negative values"))
                if close(y, torch.relu(b(a(x)))):
                    raise Verdict(hint("put a ReLU between the two convolutions as well: "
                                       "conv, ReLU, conv, ReLU"))
                if close(y, b(a(x))):
                    raise Verdict(hint("no ReLU at all: a ReLU follows each convolution"))
                raise Verdict(hint("the layers are right but the output differs: forward must "
                                   "apply conv1, ReLU, conv2, ReLU in that order"))
    return passed("your block equals the package's DoubleConv on 4 shapes, same and valid "
                  "padding, batch 1 and 2, odd sizes")


def unet_from_blocks(block_class, **unet_kwargs) -> UNet2015:
    """A :class:`~unet_edu.models.UNet2015` whose double convolutions are ``block_class``.

    Every DoubleConv of the package's network is replaced by
    ``block_class(in_channels, out_channels, padding)`` holding the same weights (copied
    convolution by convolution), so the network starts exactly where ``UNet2015(**unet_kwargs)``
    built from the same seed starts: train both and compare.
    """
    net = UNet2015(**unet_kwargs)
    padding = net.config["padding"]

    def swap(old):
        c_in, c_out = old[0].in_channels, old[0].out_channels
        new = block_class(c_in, c_out, padding)
        copy_conv_weights(old, new)
        return new

    for i, block in enumerate(net.down):
        net.down[i] = swap(block)
    net.bottleneck = swap(net.bottleneck)
    for i, block in enumerate(net.decode):
        net.decode[i] = swap(block)
    return net


# -- the centre crop --------------------------------------------------------------------------
_CROP_CASES = (((2, 3, 9, 9), 4, 4), ((1, 2, 10, 12), 6, 6), ((1, 4, 64, 64), 56, 56),
               ((1, 1, 11, 6), 4, 3), ((3, 1, 7, 8), 7, 8), ((1, 1, 13, 15), 6, 10))


def _window(x, top, left, height, width):
    return x[..., top:top + height, left:left + width]


@checker
def check_center_crop(my_center_crop):
    """Does ``my_center_crop(x, height, width)`` cut the central window out of ``x``?

    ``x`` is a ``(B, C, H, W)`` batch; the window starts ``(H - height) // 2`` rows and
    ``(W - width) // 2`` columns in, as :func:`~unet_edu.models.center_crop` does.  The
    checker crops six tensors, with even and odd differences, square and not, and one that
    needs no crop at all; it recognises a crop from a corner, an off-by-one, swapped height
    and width, and cropping the wrong axes.
    """
    params = "(x, height, width)"
    require_callable(my_center_crop, _CROP, params)
    require_signature(my_center_crop, _CROP, (torch.zeros(1, 1, 4, 4), 2, 2), params)
    for shape, height, width in _CROP_CASES:
        x = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape)
        ran = run(my_center_crop, x.clone(), height, width, what=_CROP)
        if not ran.ok:
            raise Verdict(ran.failure(_CROP, f"it failed for x of shape {shape} cropped to "
                                             f"{height} x {width}"))
        y = ran.value
        want = center_crop(x, height, width)
        want_shape = tuple(want.shape)
        if isinstance(y, torch.Tensor) and tuple(y.shape) != want_shape:
            if tuple(y.shape) == shape[:2] + (width, height):
                raise Verdict(hint("height and width are swapped: height counts rows (axis "
                                   "-2), width counts columns (axis -1)"))
            if tuple(y.shape[-2:]) == shape[-2:]:
                raise Verdict(hint("the last two axes (H, W) were not cropped: cut "
                                   "`x[..., top:top + height, left:left + width]`"))
            raise Verdict(hint(f"for x of shape {shape} cropped to {height} x {width} your "
                               f"result has shape {tuple(y.shape)}, not {want_shape}: keep "
                               f"the batch and channel axes and slice exactly height rows "
                               f"and width columns"))
        y = require_tensor(y, _CROP, want_shape)
        if torch.equal(y.float(), want):
            continue
        H, W = shape[-2:]
        top, left = (H - height) // 2, (W - width) // 2
        found = [(t, l) for t in range(H - height + 1) for l in range(W - width + 1)
                 if torch.equal(y.float(), _window(x, t, l, height, width))]
        if not found:
            raise Verdict(hint(f"for x of shape {shape} your window holds values that are "
                               f"not one {height} x {width} window of x: slice it, "
                               f"`x[..., top:top + height, left:left + width]`"))
        t, l = found[0]
        if (t, l) == (0, 0):
            raise Verdict(hint("you cut the top-left corner; the window must be centred: "
                               "top = (H - height) // 2, left = (W - width) // 2"))
        if (t, l) == (H - height, W - width):
            raise Verdict(hint("you cut the bottom-right corner; the window must be centred: "
                               "top = (H - height) // 2, left = (W - width) // 2"))
        if abs(t - top) <= 1 and abs(l - left) <= 1:
            odd = [n for n, (a, b) in (("H - height", (H, height)), ("W - width", (W, width)))
                   if (a - b) % 2]
            where = (" and ".join(odd) + (" are" if len(odd) > 1 else " is")) if odd else \
                "the margin is"
            raise Verdict(hint(f"your crop is one pixel off where {where} odd (x of shape "
                               f"{shape} to {height} x {width}): round the margin down, "
                               f"top = (H - height) // 2, as the package does"))
        raise Verdict(hint(f"your window starts at row {t}, column {l}; the centred one at "
                           f"row {top}, column {left}: top = (H - height) // 2, "
                           f"left = (W - width) // 2"))
    return passed("your crop equals the package's on 6 shapes: even and odd margins, "
                  "rectangles, and no crop at all")


# -- the forward pass ------------------------------------------------------------------------
class _UseTheParts(Exception):
    """Raised when the reader's forward pass calls the network's own forward."""


def _refuse(*args, **kwargs):
    raise _UseTheParts("call the network's parts, not the network")


class _Logged(nn.Module):
    """A part of the network that writes ``(name, input shape)`` to a shared log when called."""

    def __init__(self, name, module, log):
        super().__init__()
        self.name, self.module, self.log = name, module, log

    def forward(self, x):
        self.log.append((self.name, tuple(x.shape)))
        return self.module(x)


def _logged_copy(net: UNet2015, log: list) -> UNet2015:
    """A copy of ``net`` whose parts log their calls and whose own forward refuses to run."""
    twin = copy.deepcopy(net)
    for i in range(len(twin.down)):
        twin.down[i] = _Logged(f"down{i}", twin.down[i], log)
    for j in range(len(twin.up)):
        twin.up[j] = _Logged(f"up{j}", twin.up[j], log)
        twin.decode[j] = _Logged(f"decode{j}", twin.decode[j], log)
    twin.pool = _Logged("pool", twin.pool, log)
    twin.bottleneck = _Logged("bottleneck", twin.bottleneck, log)
    twin.head = _Logged("head", twin.head, log)
    twin.forward = twin.feature_maps = twin._run = _refuse
    return twin


def _variant_forward(net: UNet2015, x, *, order="skip-up", join="crop"):
    """The 2015 forward pass with one deliberate change (a mistake signature)."""
    skips, h = [], x
    for block in net.down:
        h = block(h)
        skips.append(h)
        h = net.pool(h)
    h = net.bottleneck(h)
    for j, (up, block) in enumerate(zip(net.up, net.decode)):
        h = up(h)
        s = skips[net.levels - 2 - j]
        if join == "crop":
            s = center_crop(s, h.shape[-2], h.shape[-1])
        elif join == "corner":
            s = s[..., :h.shape[-2], :h.shape[-1]]
        elif join == "resize":
            s = F.interpolate(s, size=h.shape[-2:], mode="bilinear", align_corners=False)
        h = block(torch.cat([s, h] if order == "skip-up" else [h, s], dim=1))
    return net.head(h)


def _forward_log_problem(log, net: UNet2015, complete: bool):
    """What the call log says about the reader's forward pass, as a hint, or None.

    ``complete`` is False when the reader's function raised: then only the calls that did
    happen are judged, not the ones an early exception prevented.
    """
    names = [n for n, _ in log]
    L = net.levels
    downs = [n for n in names if n.startswith("down")]
    if downs != [f"down{i}" for i in range(len(downs))] or (complete and len(downs) < L - 1):
        return ("run every encoder block in order, net.down[0] to net.down[-1], each on the "
                "previous level's pooled map")
    if "bottleneck" in names and names[:names.index("bottleneck")].count("pool") < L - 1:
        return (f"pool after every encoder block (net.pool): a {L}-level U-Net halves the "
                f"size {L - 1} times before the bottleneck")
    if complete and "bottleneck" not in names:
        return "after the last pool comes net.bottleneck, the deepest double convolution"
    for name, shape in log:
        if name.startswith("decode"):
            j = int(name[len("decode"):])
            c = net.decode[j][0].in_channels
            if shape[1] == c // 2:
                return (f"the skip is added, not concatenated: decoder block {j} expects "
                        f"{c} channels (2c: the encoder map and the up-convolution's), got "
                        f"{shape[1]}; join them with torch.cat([skip, up], dim=1)")
            if shape[1] != c:
                return (f"decoder block {j} received {shape[1]} channels where {c} are "
                        f"expected: join the up-convolution's output with the encoder map "
                        f"of the same level (the last one stored comes first)")
    if complete and len([n for n in names if n.startswith("up")]) < L - 1:
        return ("every decoder level starts with its up-convolution, net.up[j], which "
                "doubles the size; net.up[0] belongs to the lowest level")
    if complete and "head" not in names:
        return (f"finish with net.head, the 1x1 convolution from {net.head.in_channels} "
                f"channels to the {net.head.out_channels} classes")
    return None


@checker
def check_unet_forward(my_unet_forward):
    """Does ``my_unet_forward(net, x)`` compute what ``net(x)`` computes for a UNet2015?

    Your function must use the network's parts -- ``net.down``, ``net.pool``,
    ``net.bottleneck``, ``net.up``, ``net.decode``, ``net.head`` -- and your own crop: the
    network's own ``forward`` refuses to run inside the check.  Two networks are tried: a
    4-level one with ``padding="same"`` (no crop needed) and a 3-level one with the paper's
    ``padding="valid"`` (every skip is cropped), on batches of one and two, square and not.
    The parts log their calls, so a missing pool, an added skip or a forgotten head is named.
    """
    params = "(net, x)"
    require_callable(my_unet_forward, _FORWARD, params)
    torch.manual_seed(2)
    nets = [UNet2015(2, 4, (3, 5, 7, 9), padding="same").eval(),
            UNet2015(1, 2, (3, 4, 8), padding="valid").eval()]
    require_signature(my_unet_forward, _FORWARD, (nets[0], torch.zeros(1, 2, 16, 16)), params)
    cases = [(nets[0], (1, 2, 16, 24)), (nets[0], (2, 2, 32, 32)),
             (nets[1], (2, 1, 60, 60)), (nets[1], (1, 1, 60, 76))]
    gen = torch.Generator().manual_seed(3)
    for net, shape in cases:
        x = torch.randn(shape, generator=gen)
        log: list = []
        twin = _logged_copy(net, log)
        with torch.no_grad():
            ran = run(my_unet_forward, twin, x.clone(), what=_FORWARD)
            want = net(x)
        valid = net.config["padding"] == "valid"
        if not ran.ok:
            if isinstance(ran.error, _UseTheParts):
                raise Verdict(hint("build the pass from the network's parts (net.down, "
                                   "net.pool, net.bottleneck, net.up, net.decode, net.head) "
                                   "instead of calling net(x) or net.feature_maps"))
            text = _forward_log_problem(log, net, complete=False)
            if text:
                raise Verdict(hint(text))
            if "Sizes of tensors must match" in ran.message:
                if valid:
                    raise Verdict(hint("with padding='valid' the encoder map is larger than "
                                       "the up-convolution's output: crop it to that size "
                                       "(your centre crop) before the concatenation, as the "
                                       "paper's copy and crop does"))
                raise Verdict(hint("the maps you join differ in size: join each "
                                   "up-convolution's output with the encoder map of the same "
                                   "level (the last stored comes first), stored before its "
                                   "pool"))
            raise Verdict(ran.failure(_FORWARD))
        text = _forward_log_problem(log, net, complete=True)
        if text:
            raise Verdict(hint(text))
        y = require_tensor(ran.value, _FORWARD, tuple(want.shape),
                           "with padding='valid' the output is smaller than the input: "
                           "crop the encoder maps, never resize the decoder's")
        if close(y, want):
            continue
        with torch.no_grad():
            if close(y, _variant_forward(net, x, order="up-skip")):
                raise Verdict(hint("concatenate [skip, up] in that order: the decoder's "
                                   "first convolution reads the encoder's channels first"))
            if valid and close(y, _variant_forward(net, x, join="resize")):
                raise Verdict(hint("you resized the encoder map; the paper crops it "
                                   "(centre crop), so that its pixels stay aligned with the "
                                   "decoder's"))
            if valid and close(y, _variant_forward(net, x, join="corner")):
                raise Verdict(hint("your crop takes the top-left corner of the encoder map; "
                                   "take its centre, as the decoder map sits in the middle"))
        raise Verdict(hint("the output has the right shape but other values: store each "
                           "encoder block's output before pooling, crop it to the "
                           "up-convolution's output and concatenate [skip, up]"))
    return passed("your forward pass equals net(x) for a 4-level 'same' and a 3-level "
                  "'valid' U-Net, batch 1 and 2, square and rectangular inputs")


# -- the weight map ---------------------------------------------------------------------------
def _weight_variant(inst: np.ndarray, w0: float, sigma: float, change: str = "") -> np.ndarray:
    """The 2015 weight map with one deliberate change (a mistake signature)."""
    fg = inst > 0
    total, n_fg = inst.size, int(fg.sum())
    w = np.ones(inst.shape)
    if 0 < n_fg < total and change != "no-class":
        a, b = total / (2.0 * n_fg), total / (2.0 * (total - n_fg))
        w = np.where(fg, b, a) if change == "swap-class" else np.where(fg, a, b)
    ids = np.unique(inst[fg])
    if len(ids) >= 2:
        inside = change == "inside"
        d = np.stack([ndimage.distance_transform_edt((inst == i) if inside else (inst != i))
                      for i in ids])
        d.sort(axis=0)
        d1, d2 = d[0], (d[0] if change == "d1-twice" else d[1])
        if change == "sigma":
            border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma))
        elif change == "no-square":
            border = w0 * np.exp(-(d1 + d2) / (2 * sigma**2))
        else:
            border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
        w = w + (border if change == "everywhere" else np.where(fg, 0.0, border))
    return w


_WEIGHT_MISTAKES = (
    ("everywhere", "the border term belongs on background pixels only (the gaps between "
                   "cells); on the cells keep w_c alone"),
    ("d1-twice", "you used the distance to the nearest cell twice: d2 is the distance to the "
                 "second-nearest cell (compute one distance map per cell and sort them)"),
    ("swap-class", "the class weights are swapped: w_c gives each class N / (2 N_class), so "
                   "the rarer class (the cells) gets the larger weight"),
    ("no-class", "w_c is missing: each class gets N / (2 N_class) before the border term is "
                 "added, so that cells and background count equally"),
    ("inside", "distance_transform_edt measures the distance to the nearest zero: pass "
               "`inst != i`, so that cell i is the zero set and d is the distance to it"),
    ("sigma", "the exponent is -(d1 + d2)^2 / (2 sigma^2): square sigma"),
    ("no-square", "the exponent is -(d1 + d2)^2 / (2 sigma^2): square the sum of distances"),
)


@checker
def check_weight_map(my_weight_map):
    """Does ``my_weight_map(instances, w0, sigma)`` give the 2015 U-Net's pixel weights?

    ``instances`` is an ``(H, W)`` integer tensor: 0 for background, ``1..k`` for the cells.
    The answer is ``w_c + w0 exp(-(d1 + d2)^2 / (2 sigma^2))`` on background pixels and
    ``w_c`` on cells, as :func:`~unet_edu.data.unet_weight_map` computes it.  The checker
    tries a field of touching cells, an odd-sized crop with other ``w0`` and ``sigma``, a
    single cell (no second-nearest cell: no border term) and an image with no cell (weight 1
    everywhere), and recognises seven usual slips.
    """
    params = "(instances, w0, sigma)"
    require_callable(my_weight_map, _WEIGHTS, params)
    require_signature(my_weight_map, _WEIGHTS, (torch.zeros(4, 4, dtype=torch.long), 10.0,
                                                5.0), params)
    field = synthetic_cells(1, 48, seed=4).instances[0]
    one_id = int(field[field > 0].unique()[0])
    cases = [("a field of touching cells", field, 10.0, 5.0),
             ("an odd-sized crop", field[3:40, 1:46], 5.0, 3.0),
             ("an image with a single cell", (field == one_id).long() * 3, 10.0, 5.0),
             ("an image with no cell", torch.zeros(9, 11, dtype=torch.long), 10.0, 5.0)]
    for name, inst, w0, sigma in cases:
        ran = run(my_weight_map, inst.clone(), w0, sigma, what=_WEIGHTS)
        single, empty = name.endswith("single cell"), name.endswith("no cell")
        one_class = ("an image with no cell has one class only, where N / (2 N_class) gives 1/2 "
                     "or divides by zero: give every pixel weight 1 when there is no cell (or "
                     "no background)")
        if not ran.ok:
            if empty:
                raise Verdict(hint(f"{one_class} (yours raised {type(ran.error).__name__})"))
            if single:
                raise Verdict(hint("with a single cell there is no second-nearest cell: add "
                                   "the border term only when the image holds two or more "
                                   f"cells (yours raised {type(ran.error).__name__})"))
            raise Verdict(ran.failure(_WEIGHTS, f"it failed on {name}"))
        value = ran.value
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        y = require_tensor(value, _WEIGHTS, tuple(inst.shape), "one weight per pixel")
        want = unet_weight_map(inst, w0, sigma)
        if not torch.isfinite(y).all():
            if empty:
                raise Verdict(hint(one_class))
            raise Verdict(hint(f"your map holds NaN or infinite values on {name}"))
        if close(y, want, atol=1e-4):
            continue
        inst_np = inst.numpy()
        for change, text in _WEIGHT_MISTAKES:
            if close(y, torch.from_numpy(_weight_variant(inst_np, w0, sigma, change)),
                     atol=1e-4):
                raise Verdict(hint(text))
        if single:
            raise Verdict(hint("with a single cell only w_c remains: no second-nearest cell, "
                               "no border term"))
        if empty:
            raise Verdict(hint(one_class))
        if not close(y, want, atol=1e-4) and close(y, torch.from_numpy(
                _weight_variant(inst_np, 10.0, 5.0)), atol=1e-4):
            raise Verdict(hint("use the arguments w0 and sigma, not the paper's 10 and 5"))
        worst = int((y.double() - want.double()).abs().argmax())
        r, c = divmod(worst, inst.shape[1])
        raise Verdict(hint(f"on {name} your weight at row {r}, column {c} is "
                           f"{float(y[r, c]):.3f} where {float(want[r, c]):.3f} is expected; "
                           f"w = w_c + w0 exp(-(d1 + d2)^2 / (2 sigma^2)) on background, "
                           f"w_c on cells"))
    return passed("your weight map equals the package's on touching cells, an odd-sized crop "
                  "with other w0 and sigma, a single cell and an empty image")
