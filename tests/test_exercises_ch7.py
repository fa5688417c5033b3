"""Chapter 7's build-it checker: cross-attention from the image's pixels to the text's tokens."""

import math

import pytest
import torch
import torch.nn.functional as F

from unet_edu.blocks import CrossAttention
from unet_edu.exercises.chapter7 import (check_cross_attention, cross_attention_variant,
                                         with_cross_attention)
from unet_edu.exercises.feedback import Feedback
from unet_edu.models import DiffusionUNet


def verdict(feedback, status):
    """The feedback's text, after checking it is one line with this status."""
    assert isinstance(feedback, Feedback)
    assert "\n" not in str(feedback)
    assert feedback.status == status, str(feedback)
    return feedback.text


def cross(layer, x, context, *, softmax_dim=-1, scale="head", swap_kv=False, heads=None,
          residual=True, sdpa=False):
    b, c, h, w = x.shape
    n_heads = heads or layer.num_heads
    d = c // n_heads
    q = layer.to_q(layer.norm(x).flatten(2).transpose(1, 2))
    k, v = layer.to_kv(context).chunk(2, dim=-1)
    if swap_kv:
        k, v = v, k
    split = lambda z: z.reshape(b, z.shape[1], n_heads, d).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    if sdpa:
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        scores = q @ k.transpose(-1, -2)
        if scale == "head":
            scores = scores / math.sqrt(d)
        elif scale == "channels":
            scores = scores / math.sqrt(c)
        out = scores.softmax(dim=softmax_dim) @ v
    out = layer.proj(out.transpose(1, 2).reshape(b, h * w, c))
    out = out.transpose(1, 2).reshape(b, c, h, w)
    return x + out if residual else out


def test_variant_without_change_is_the_layer():
    torch.manual_seed(0)
    layer = CrossAttention(8, 6, num_heads=2, norm_groups=2)
    x, ctx = torch.randn(2, 8, 3, 4), torch.randn(2, 5, 6)
    assert torch.allclose(cross_attention_variant(layer, x, ctx), layer(x, ctx), atol=1e-6)


def test_reference_passes_by_hand_and_with_sdpa():
    assert "equals CrossAttention" in verdict(check_cross_attention(cross), "pass")
    assert verdict(check_cross_attention(lambda l, x, c: cross(l, x, c, sdpa=True)), "pass")


def test_typical_wrong_cross_attentions_get_their_own_hint():
    cases = {
        "the softmax runs over the wrong axis": lambda l, x, c: cross(l, x, c, softmax_dim=-2),
        "divide the scores by sqrt(d), d = C / heads": lambda l, x, c: cross(l, x, c,
                                                                             scale=None),
        "not by sqrt(C)": lambda l, x, c: cross(l, x, c, scale="channels"),
        "keys and values are swapped": lambda l, x, c: cross(l, x, c, swap_kv=True),
        "add the input back": lambda l, x, c: cross(l, x, c, residual=False),
    }
    for text, fn in cases.items():
        assert text in verdict(check_cross_attention(fn), "hint")


def test_queries_from_the_text_are_named():
    def queries_from_text(layer, x, context):
        q = layer.to_q(context)
        return x + q.mean()

    assert "the queries come from the image" in verdict(check_cross_attention(queries_from_text),
                                                        "hint")


def test_bad_input():
    def my_cross_attention(layer, x, context):
        raise NotImplementedError("fill in my_cross_attention")

    assert verdict(check_cross_attention(my_cross_attention), "todo")
    assert "must take (layer, x, context)" in verdict(check_cross_attention(lambda x: x),
                                                      "error")
    assert "compute the attention from the layer's parts" in verdict(
        check_cross_attention(lambda layer, x, context: layer(x, context)), "hint")
    assert "turn the pixel tokens back into an image" in verdict(
        check_cross_attention(lambda l, x, c: cross(l, x, c).flatten(2).transpose(1, 2)),
        "hint")


def test_the_readers_layer_drops_into_a_text_conditioned_unet():
    torch.manual_seed(0)
    model = DiffusionUNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, norm_groups=4,
                          num_heads=2, context_dim=6).eval()
    x, t, ctx = torch.randn(2, 1, 8, 8), torch.tensor([3, 900]), torch.randn(2, 4, 6)
    with torch.no_grad():
        assert torch.allclose(with_cross_attention(model, cross)(x, t, context=ctx),
                              model(x, t, context=ctx), atol=1e-5)
    with pytest.raises(ValueError, match="has no CrossAttention"):
        with_cross_attention(DiffusionUNet(base_channels=8, norm_groups=4), cross)
