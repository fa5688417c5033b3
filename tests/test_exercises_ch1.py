"""Chapter 1's build-it checkers: the plain denoising stack and its receptive field."""

import math

import torch
from torch import nn

from unet_edu.exercises.chapter1 import (check_plain_stack, check_stack_field, copy_conv_weights,
                                         stack_field)
from unet_edu.exercises.feedback import Feedback
from unet_edu.models import NaiveCNN


def verdict(feedback, status):
    """The feedback's text, after checking it is one line with this status."""
    assert isinstance(feedback, Feedback)
    assert "\n" not in str(feedback)
    assert feedback.status == status, str(feedback)
    return feedback.text


# -- the plain stack ------------------------------------------------------------------------
def stack(depth, hidden, channels=1, *, last_relu=False, relus=True, padding=1, extra=0):
    widths = [channels] + [hidden] * (depth - 1 + extra) + [channels]
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Conv2d(a, b, 3, padding=padding))
        if relus and (i < len(widths) - 2 or last_relu):
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def test_reference_stack_passes():
    assert "equals NaiveCNN" in verdict(check_plain_stack(stack), "pass")


def test_unfilled_skeleton_is_not_attempted():
    def my_plain_stack(depth, hidden, channels=1):
        raise NotImplementedError("fill in my_plain_stack")

    assert "fill in `my_plain_stack`" in verdict(check_plain_stack(my_plain_stack), "todo")


def test_typical_wrong_stacks_get_their_own_hint():
    cases = {
        "a ReLU after the last convolution": lambda d, h, c: stack(d, h, c, last_relu=True),
        "no ReLU between the convolutions": lambda d, h, c: stack(d, h, c, relus=False),
        "without it every layer trims a pixel": lambda d, h, c: stack(d, h, c, padding=0),
        "depth counts every convolution": lambda d, h, c: stack(d, h, c, extra=1),
        "wrap it as one module": lambda d, h, c: list(stack(d, h, c)),
    }
    for text, fn in cases.items():
        assert text in verdict(check_plain_stack(fn), "hint")


def test_a_stack_that_forgets_the_channels_is_named_by_layer():
    def rgb_blind(depth, hidden, channels=1):
        return stack(depth, hidden, 1)

    assert "convolution 1 maps 1 -> 6 channels where 3 -> 6" in verdict(
        check_plain_stack(rgb_blind), "hint")


def test_bad_input_gives_one_line():
    assert "pass the function" in verdict(check_plain_stack(NaiveCNN()), "error")
    assert "must take (depth, hidden, channels)" in verdict(
        check_plain_stack(lambda depth: None), "error")
    assert "ZeroDivisionError" in verdict(check_plain_stack(lambda d, h, c: d / 0), "error")
    assert "must return an nn.Module" in verdict(check_plain_stack(lambda d, h, c: 3), "error")


def test_copy_conv_weights_makes_two_builds_equal():
    torch.manual_seed(0)
    a, b = NaiveCNN(hidden=4, depth=3), stack(3, 4)
    assert copy_conv_weights(a, b) == 3
    x = torch.randn(1, 1, 9, 9)
    assert torch.allclose(a(x), b(x))


# -- the receptive field of a stack ---------------------------------------------------------
def test_field_reference_and_edge_cases():
    assert stack_field([3] * 5) == 11 and stack_field([]) == 1 and stack_field([1, 1]) == 1
    assert stack_field([5, 3]) == 7 and stack_field([2, 2]) == 3
    right = lambda ks: 1 + sum(k - 1 for k in ks)  # noqa: E731
    assert "agrees with the recurrence" in verdict(check_stack_field(right), "pass")


def test_typical_wrong_fields_get_their_own_hint():
    cases = {
        "each layer adds k - 1 pixels, not k": lambda ks: sum(ks),
        "start from 1 pixel": lambda ks: sum(k - 1 for k in ks),
        "ignores the kernel sizes": lambda ks: 1 + 2 * len(ks),
        "not by multiplying": lambda ks: math.prod(ks),
    }
    for text, fn in cases.items():
        assert text in verdict(check_stack_field(fn), "hint")


def test_an_empty_chain_must_give_one():
    def loop_from_first(kernel_sizes):
        r = kernel_sizes[0]
        for k in kernel_sizes[1:]:
            r += k - 1
        return r

    assert "an empty chain (no layers) must give 1" in verdict(
        check_stack_field(loop_from_first), "hint")


def test_field_bad_input():
    assert "must return a number" in verdict(check_stack_field(lambda ks: "11"), "error")
    assert "must take (kernel_sizes)" in verdict(check_stack_field(lambda: 1), "error")
    assert "pass the function" in verdict(check_stack_field(11), "error")
