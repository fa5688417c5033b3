"""Chapter 1 — why not a naive CNN?  Checkers for the exercises.

Two kinds of exercise.  The arithmetic ones (``check_receptive_field``, ...) compute the right
number with the package (never a stored number), compare it with yours, and print a verdict
(they return None).  The build-it ones run code you write:

* :func:`check_plain_stack` -- your plain denoising stack, layer by layer and output by
  output, against :class:`~unet_edu.models.NaiveCNN` with the same weights;
* :func:`check_stack_field` -- your receptive-field formula for a chain of stride-1
  convolutions, against the recurrence of :func:`~unet_edu.receptive_field.layer_table`.

They return one line of :class:`~unet_edu.exercises.feedback.Feedback` that names the
mistake they find and where to look.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import verdict
from .feedback import (Verdict, checker, close, hint, passed, problem, require_callable,
                       require_number, require_signature, require_tensor, run)
from ..models import NaiveCNN, count_parameters
from ..receptive_field import LayerSpec, layer_table

__all__ = [
    "naive_receptive_field",
    "check_receptive_field",
    "check_dense_decisions",
    "check_naive_parameters",
    "check_layers_needed",
    "stack_field",
    "check_plain_stack",
    "check_stack_field",
    "copy_conv_weights",
]


def naive_receptive_field(depth: int) -> int:
    """Receptive field (side, in pixels) of a :class:`NaiveCNN` with ``depth`` 3x3 layers."""
    return layer_table(NaiveCNN(hidden=1, depth=depth))[-1]["rf"]


def check_receptive_field(depth: int, answer: int) -> None:
    """Your receptive field for a ``depth``-layer stack of 3x3 convolutions."""
    right = naive_receptive_field(depth)
    verdict(int(answer) == right, f"{depth} layers of 3x3 see {right} x {right} pixels.",
            "each 3x3 layer (stride 1) adds 2 pixels to the side: start from 1.")


def check_dense_decisions(height: int, width: int, answer: int) -> None:
    """How many per-pixel decisions a dense predictor makes on a ``height x width`` image."""
    right = height * width
    verdict(int(answer) == right, f"{right:,} decisions, one per pixel.",
            "one label (or one noise value per channel) for every pixel: count the pixels.")


def check_naive_parameters(hidden: int, depth: int, answer: int, in_channels: int = 1) -> None:
    """The parameter count of ``NaiveCNN(in_channels, hidden, depth)``."""
    right = count_parameters(NaiveCNN(in_channels, hidden=hidden, depth=depth))
    verdict(int(answer) == right, f"{right:,} parameters.",
            "a 3x3 convolution from a to b channels has 9*a*b weights and b biases; the "
            "first layer reads the image, the last writes the image.")


def check_layers_needed(target: int, answer: int) -> None:
    """The fewest 3x3 layers whose receptive field covers ``target`` pixels (side)."""
    depth = 2
    while naive_receptive_field(depth) < target:
        depth += 1
    verdict(int(answer) == depth, f"{depth} layers reach {naive_receptive_field(depth)} >= {target} pixels.",
            "solve 1 + 2 * depth >= target for the smallest whole depth.")


# --------------------------------------------------------------------------------------------
# Build-it exercises
# --------------------------------------------------------------------------------------------
_STACK = "my_plain_stack"
_FIELD = "my_stack_field"
_OTHER_ACTIVATIONS = (nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU)


def copy_conv_weights(source: nn.Module, target: nn.Module) -> int:
    """Copy the weights of ``source``'s convolutions into ``target``'s, in definition order.

    Two networks built from the same layers in the same order then compute the same function,
    whatever their modules are called; returns the number of convolutions copied.  The shapes
    must agree (a ``ValueError`` names the first that does not).
    """
    src = [m for m in source.modules() if isinstance(m, nn.Conv2d)]
    dst = [m for m in target.modules() if isinstance(m, nn.Conv2d)]
    if len(src) != len(dst):
        raise ValueError(f"copy_conv_weights: {len(src)} convolutions in the source but "
                         f"{len(dst)} in the target; build both with the same layers")
    with torch.no_grad():
        for i, (a, b) in enumerate(zip(src, dst)):
            if a.weight.shape != b.weight.shape or (a.bias is None) != (b.bias is None):
                raise ValueError(f"copy_conv_weights: convolution {i + 1} has weights "
                                 f"{tuple(a.weight.shape)} in the source and "
                                 f"{tuple(b.weight.shape)} in the target")
            b.weight.copy_(a.weight)
            if a.bias is not None:
                b.bias.copy_(a.bias)
    return len(src)


def _layer_problem(i: int, conv: nn.Conv2d, depth: int, hidden: int, channels: int):
    """The first way convolution ``i`` (0-based) differs from NaiveCNN's, as a hint, or None."""
    n = i + 1
    if tuple(conv.kernel_size) != (3, 3):
        return (f"convolution {n} has a {conv.kernel_size[0]}x{conv.kernel_size[1]} kernel; "
                f"every layer of the plain stack is 3x3 (kernel_size=3)")
    if tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1):
        return (f"convolution {n} has stride {conv.stride[0]} and dilation "
                f"{conv.dilation[0]}; a plain stack keeps the resolution: stride 1, "
                f"dilation 1")
    want_in = channels if i == 0 else hidden
    want_out = channels if i == depth - 1 else hidden
    if (conv.in_channels, conv.out_channels) != (want_in, want_out):
        return (f"convolution {n} maps {conv.in_channels} -> {conv.out_channels} channels "
                f"where {want_in} -> {want_out} are needed: the first reads the image's "
                f"{channels} channel(s), the last writes them back, and the others keep "
                f"{hidden}")
    if tuple(conv.padding) != (1, 1):
        return (f"convolution {n} has padding={conv.padding[0]}; with padding=1 a 3x3 "
                f"convolution keeps the image's size, without it every layer trims a pixel "
                f"per side, and a denoiser must return an image of its input's size")
    if conv.bias is None:
        return f"convolution {n} has no bias; keep the biases (bias=True, the default)"
    return None


@checker
def check_plain_stack(my_plain_stack):
    """Does ``my_plain_stack(depth, hidden, channels)`` build chapter 1's plain stack?

    It must return an ``nn.Module`` of ``depth`` 3x3 convolutions (padding 1) with a ReLU
    between each two, and none after the last, mapping ``channels`` to ``hidden`` and back:
    the layers of :class:`~unet_edu.models.NaiveCNN`.  The checker builds it for three sizes
    (depth 2, 3 and 5; one and three channels), copies NaiveCNN's weights into your
    convolutions, and compares the outputs on batches of one and two images, 28 x 28 and
    13 x 17.
    """
    params = "(depth, hidden, channels)"
    require_callable(my_plain_stack, _STACK, params)
    require_signature(my_plain_stack, _STACK, (5, 32, 1), params)
    for depth, hidden, channels in ((5, 32, 1), (2, 4, 1), (3, 6, 3)):
        ran = run(my_plain_stack, depth, hidden, channels, what=_STACK)
        if not ran.ok:
            raise Verdict(ran.failure(_STACK))
        net = ran.value
        if isinstance(net, (list, tuple)) and all(isinstance(m, nn.Module) for m in net):
            raise Verdict(hint(f"`{_STACK}` returned a {type(net).__name__} of layers; wrap "
                               f"it as one module: `return nn.Sequential(*layers)`"))
        if not isinstance(net, nn.Module):
            raise Verdict(problem(f"`{_STACK}` must return an nn.Module (e.g. "
                                  f"nn.Sequential), got a {type(net).__name__}"))
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise Verdict(hint("no nn.Conv2d layer found: build the stack from nn.Conv2d "
                               "modules (the checker copies the package's weights into "
                               "them)"))
        if len(convs) != depth:
            raise Verdict(hint(f"for depth={depth} you built {len(convs)} convolutions: "
                               f"depth counts every convolution, the first (image -> "
                               f"hidden) and the last (hidden -> image) included"))
        for i, conv in enumerate(convs):
            text = _layer_problem(i, conv, depth, hidden, channels)
            if text:
                raise Verdict(hint(text))
        reference = NaiveCNN(channels, hidden=hidden, depth=depth).eval()
        copy_conv_weights(reference, net)
        net.eval()
        gen = torch.Generator().manual_seed(depth)
        for shape in ((2, channels, 28, 28), (1, channels, 13, 17)):
            x = torch.randn(shape, generator=gen)
            with torch.no_grad():
                out = run(net, x, what=_STACK)
                if not out.ok:
                    raise Verdict(out.failure(f"the module from {_STACK}"))
                y = require_tensor(out.value, f"the module from {_STACK}", shape,
                                   "the output has the input's shape")
                want = reference.layers(x)
                if close(y, want):
                    continue
                linear = x
                for k, conv in enumerate(reference.layers):
                    if isinstance(conv, nn.Conv2d):
                        linear = conv(linear)
                if close(y, torch.relu(want)):
                    raise Verdict(hint("a ReLU after the last convolution: your output can "
                                       "never be negative, yet noise and the digits' "
                                       "corrections are; put the ReLUs only between layers"))
                if close(y, linear):
                    raise Verdict(hint("no ReLU between the convolutions: a stack of linear "
                                       "convolutions is one big linear convolution; put "
                                       "nn.ReLU() after every convolution but the last"))
                if any(isinstance(m, _OTHER_ACTIVATIONS) for m in net.modules()):
                    raise Verdict(hint("use ReLU between the layers, as NaiveCNN does (the "
                                       "checker compares with it)"))
                raise Verdict(hint("the layers are right but the output differs: apply them "
                                   "in order, conv, ReLU, conv, ReLU, ..., conv, and return "
                                   "the last convolution's output"))
    return passed("your stack equals NaiveCNN layer by layer and output by output (depth 2, "
                  "3 and 5; 1 and 3 channels; batch 1 and 2; 28 x 28 and 13 x 17)")


def stack_field(kernel_sizes) -> int:
    """Receptive field (side) of a chain of stride-1 convolutions, by the package's recurrence.

    An empty chain sees the pixel itself: 1.
    """
    specs = [LayerSpec(f"conv{i + 1}", int(k)) for i, k in enumerate(kernel_sizes)]
    return layer_table(specs)[-1]["rf"] if specs else 1


_FIELD_CASES = ([3, 3, 3, 3, 3], [3], [5, 3], [3] * 10, [1, 1], [7, 5, 3, 1], [2, 2], [])
_FIELD_MISTAKES = (
    (lambda ks: sum(ks), "each layer adds k - 1 pixels, not k: a 1x1 convolution adds "
                         "nothing, a 3x3 adds 2"),
    (lambda ks: sum(k - 1 for k in ks), "start from 1 pixel: a chain without layers (or of "
                                        "1x1 layers only) sees the pixel itself"),
    (lambda ks: 1 + 2 * len(ks), "your formula ignores the kernel sizes: a 5x5 layer adds "
                                 "4 pixels, a 1x1 layer none; use k - 1 of each layer"),
    (lambda ks: math.prod(ks), "fields grow by adding k - 1 per layer, not by multiplying "
                               "the kernel sizes"),
)


@checker
def check_stack_field(my_stack_field):
    """Does ``my_stack_field(kernel_sizes)`` give the receptive field of a stride-1 chain?

    ``kernel_sizes`` lists the kernels from the first layer to the last.  The checker tries
    eight chains, the empty one, 1x1 and even kernels included, and compares with
    :func:`stack_field`; on a mismatch it looks for the usual slips (adding k, starting at 0,
    ignoring the kernel size, multiplying).
    """
    require_callable(my_stack_field, _FIELD, "(kernel_sizes)")
    require_signature(my_stack_field, _FIELD, ([3, 3],), "(kernel_sizes)")
    got = {}
    for case in _FIELD_CASES:
        ran = run(my_stack_field, list(case), what=_FIELD, none_is_todo=bool(case))
        got[tuple(case)] = ran
    nonempty = [c for c in _FIELD_CASES if c]
    failed = [c for c in nonempty if not got[tuple(c)].ok]
    if failed:
        raise Verdict(got[tuple(failed[0])].failure(
            _FIELD, f"it failed for kernel_sizes={failed[0]}"))
    empty = got[()]
    got = {tuple(c): require_number(got[tuple(c)].value, _FIELD) for c in nonempty}
    if empty.ok and empty.value is not None:
        got[()] = require_number(empty.value, _FIELD)
    elif all(got[tuple(c)] == stack_field(c) for c in nonempty):
        what = (f"raised {type(empty.error).__name__}" if not empty.ok else "returned None")
        raise Verdict(hint(f"an empty chain (no layers) must give 1, the pixel itself; "
                           f"yours {what}: start from r = 1 before the loop"))
    else:
        got[()] = math.nan
    if all(got[tuple(c)] == stack_field(c) for c in _FIELD_CASES):
        return passed("your formula agrees with the recurrence on 8 chains, from no layer to "
                      "ten, with 1x1, even and large kernels")
    known = [c for c in _FIELD_CASES if not math.isnan(got[tuple(c)])]
    for mistake, text in _FIELD_MISTAKES:
        if all(got[tuple(c)] == mistake(c) for c in known):
            raise Verdict(hint(text))
    case = next(c for c in known if got[tuple(c)] != stack_field(c))
    raise Verdict(hint(f"for kernel_sizes={case} yours gives {got[tuple(case)]:g} and the "
                       f"recurrence {stack_field(case)}: start at r = 1 and add k - 1 for "
                       f"every layer"))
