"""Chapter 5's checkers and the self-attention reference that tells positions from channels."""

import math

import torch
import torch.nn.functional as F

from unet_edu.blocks import SelfAttention
from unet_edu.diffusion import ddim_timesteps
from unet_edu.exercises.chapter5 import (attends_over_positions, attention_weights, check_attention_entries,
                                         check_attention_forward, check_ddim_timesteps, check_resblock_params,
                                         reference_self_attention)


def channel_attention(layer, x):
    """The easy bug: q, k, v laid out as (B, heads, head_dim, H*W), so q @ k^T mixes channels."""
    b, c, h, w = x.shape
    tokens = layer.norm(x).flatten(2).transpose(1, 2)
    qkv = layer.qkv(tokens).transpose(1, 2).reshape(b, 3, layer.num_heads, c // layer.num_heads, h * w)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // layer.num_heads), dim=-1)
    out = (attn @ v).reshape(b, c, h * w).transpose(1, 2)
    return x + layer.proj(out).transpose(1, 2).reshape(b, c, h, w)


def package_forward(layer, x):
    return layer(x)


def test_reference_matches_the_package_layer_and_rejects_the_bug():
    torch.manual_seed(0)
    layer = SelfAttention(16, num_heads=4, norm_groups=4)
    x = torch.randn(2, 16, 4, 5)
    assert torch.allclose(reference_self_attention(layer, x), layer(x), atol=1e-5)
    assert attends_over_positions(package_forward, layer, x)
    assert channel_attention(layer, x).shape == x.shape  # the bug runs and has the right shape...
    assert not attends_over_positions(channel_attention, layer, x)  # ...but computes something else


def test_attention_weights_are_over_positions():
    torch.manual_seed(1)
    layer = SelfAttention(8, num_heads=2, norm_groups=2)
    a = attention_weights(layer, torch.randn(3, 8, 3, 4))
    assert a.shape == (3, 2, 12, 12)
    assert torch.allclose(a.sum(-1), torch.ones(3, 2, 12))


def test_checkers(grade):
    assert grade(check_resblock_params, 16, 32, 64, 16 * 2 + 16 * 9 * 32 + 32 + 32 * 2 + 32 * 9 * 32 + 32
                                 + 64 * 64 + 64 + 16 * 32 + 32)
    assert not grade(check_resblock_params, 16, 32, 64, 1)
    assert grade(check_attention_entries, 7, 7, 4, 4 * 49 * 49)
    assert not grade(check_attention_entries, 7, 7, 4, 49 * 49)
    assert grade(check_ddim_timesteps, 4, ddim_timesteps(1000, 4))
    assert grade(check_ddim_timesteps, 5, [999, 799, 599, 399, 199])
    assert not grade(check_ddim_timesteps, 5, [1000, 800, 600, 400, 200])
    assert grade(check_ddim_timesteps, 4, [999, 666, 333, 0], spacing="linspace")
    assert not grade(check_ddim_timesteps, 4, [999, 666, 333, 0])
    assert grade(check_ddim_timesteps, 5, [800, 600, 400, 200, 0], spacing="leading")
    assert grade(check_attention_forward, package_forward)
    assert not grade(check_attention_forward, channel_attention)
    assert not grade(check_attention_forward, lambda layer, x: x.mean(1))
    assert not grade(check_attention_forward, lambda layer, x: 1 / 0)


def test_sdpa_layout_used_by_the_package():
    # The package's layer uses (B, heads, HW, d); the same call on the transposed layout is the bug.
    q = torch.randn(1, 1, 6, 3)
    assert F.scaled_dot_product_attention(q, q, q).shape == (1, 1, 6, 3)
