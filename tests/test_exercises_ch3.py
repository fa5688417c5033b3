"""Chapter 3's build-it checkers: the receptive-field recurrence and the exact field."""

import math

import torch

from unet_edu.exercises.chapter3 import check_field_mask, check_recurrence, recurrence_variant
from unet_edu.exercises.feedback import Feedback
from unet_edu.receptive_field import LayerSpec, layer_table, linearized_copy


def verdict(feedback, status):
    """The feedback's text, after checking it is one line with this status."""
    assert isinstance(feedback, Feedback)
    assert "\n" not in str(feedback)
    assert feedback.status == status, str(feedback)
    return feedback.text


# -- the recurrence -------------------------------------------------------------------------
def recurrence(layers, *, jump_first=False, strides=True, dilation=True, transposed=True):
    r, j = 1, 1
    for s in layers:
        k = (s.dilation if dilation else 1) * (s.kernel - 1) + 1
        if s.transposed and transposed:
            r += (math.ceil(k / s.stride) - 1) * j
            j /= s.stride
            continue
        if jump_first and strides:
            j *= s.stride
        r += (k - 1) * j
        if strides and not jump_first:
            j *= s.stride
    return r


def test_variant_without_change_is_layer_table():
    specs = [LayerSpec("a", 3), LayerSpec("p", 2, 2), LayerSpec("b", 3, 1, 2),
             LayerSpec("u", 3, 2, transposed=True)]
    assert round(recurrence_variant(specs)) == layer_table(specs)[-1]["rf"]


def test_reference_recurrence_passes():
    assert "agrees with layer_table" in verdict(check_recurrence(recurrence), "pass")


def test_typical_wrong_recurrences_get_their_own_hint():
    cases = {
        "with the jump *before* this layer": lambda L: recurrence(L, jump_first=True),
        "multiplies the jump by s": lambda L: recurrence(L, strides=False),
        "a dilated kernel spans": lambda L: recurrence(L, dilation=False),
        "divides the jump by s instead of multiplying": lambda L: recurrence(L, transposed=False),
        "start from r = 1": lambda L: recurrence(L) - 1,
    }
    for text, fn in cases.items():
        assert text in verdict(check_recurrence(fn), "hint")


def test_an_unrecognised_slip_is_located_at_its_layer():
    def forgets_pools(layers):  # a pool's window is skipped, its stride kept
        r, j = 1, 1
        for s in layers:
            if s.name.startswith("pool"):
                j *= s.stride
                continue
            k = s.dilation * (s.kernel - 1) + 1
            if s.transposed:
                r += (math.ceil(k / s.stride) - 1) * j
                j /= s.stride
            else:
                r += (k - 1) * j
                j *= s.stride
        return r

    text = verdict(check_recurrence(forgets_pools), "hint")
    assert "the first wrong value comes after layer 3 (pool0" in text


def test_recurrence_bad_input():
    assert "must return a number" in verdict(check_recurrence(lambda L: [1]), "error")
    assert "an empty chain (no layers) must give 1" in verdict(
        check_recurrence(lambda L: recurrence(L) if L else L[0]), "hint")
    assert "must take (layers)" in verdict(check_recurrence(lambda a, b: 1), "error")


# -- the exact field ------------------------------------------------------------------------
def field(model, input_shape, position, *, whole=False, swap=False, linear=True, as_grad=False):
    net = linearized_copy(model) if linear else model
    dtype = torch.float64 if linear else torch.float32
    x = torch.ones(1, *input_shape, dtype=dtype, requires_grad=True)
    out = net(x)
    row, col = position[::-1] if swap else position
    (out.sum() if whole else out[0, :, row, col].sum()).backward()
    grad = x.grad[0].abs().sum(0)
    return grad if as_grad else grad != 0


def test_reference_field_passes():
    assert "equal exact_receptive_field's" in verdict(check_field_mask(field), "pass")


def test_typical_wrong_fields_get_their_own_hint():
    cases = {
        "every pixel is marked": lambda m, s, p: field(m, s, p, whole=True),
        "rows and columns are swapped": lambda m, s, p: field(m, s, p, swap=True),
        "through ReLU and max-pooling a gradient can vanish":
            lambda m, s, p: field(m, s, p, linear=False),
        "return a bool mask": lambda m, s, p: field(m, s, p, as_grad=True),
    }
    for text, fn in cases.items():
        assert text in verdict(check_field_mask(fn), "hint")


def test_field_bad_input():
    assert "sum the gradient's magnitude over the batch and channel axes" in verdict(
        check_field_mask(lambda m, s, p: field(m, s, p)[None]), "hint")
    assert "must return a torch.Tensor" in verdict(check_field_mask(lambda m, s, p: 1), "error")
    assert "raised AttributeError" in verdict(check_field_mask(lambda m, s, p: m.no_such), "error")
