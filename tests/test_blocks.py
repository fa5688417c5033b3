import math

import pytest
import torch

from unet_edu.blocks import (AttentionGate, CrossAttention, Downsample, ResBlock, SelfAttention,
                             SinusoidalTimeEmbedding, Upsample)


def test_sinusoidal_embedding_values_and_properties():
    emb = SinusoidalTimeEmbedding(16)
    t = torch.arange(0, 1000, 7)
    e = emb(t)
    assert e.shape == (len(t), 16)
    assert e.abs().max() <= 1.0
    # t = 0: all sines are 0, all cosines are 1.
    assert torch.allclose(emb(torch.tensor([0]))[0], torch.cat([torch.zeros(8), torch.ones(8)]))
    # Closed form for one entry: channel 1 is sin(t * 10000^(-1/8)).
    assert math.isclose(e[3, 1].item(), math.sin(21 * 10000 ** (-1 / 8)), rel_tol=1e-5)
    # Every row has the same norm sqrt(dim/2), and the dot product depends only on the distance.
    assert torch.allclose(e.norm(dim=1), torch.full((len(t),), math.sqrt(8.0)), atol=1e-4)
    a, b = emb(torch.tensor([100.0, 130.0])), emb(torch.tensor([500.0, 530.0]))
    assert math.isclose(float(a[0] @ a[1]), float(b[0] @ b[1]), rel_tol=1e-4)
    # Different timesteps get different embeddings.
    assert torch.cdist(e, e).add(torch.eye(len(t)) * 10).min() > 1e-3


def test_sinusoidal_embedding_rejects_odd_dim():
    with pytest.raises(ValueError, match="even dim"):
        SinusoidalTimeEmbedding(7)


def test_resblock_scale_shift_and_add():
    x, emb = torch.randn(2, 8, 6, 6), torch.randn(2, 20)
    for mode in ("scale_shift", "add"):
        block = ResBlock(8, 16, emb_dim=20, norm_groups=4, time_mode=mode)
        assert block(x, emb).shape == (2, 16, 6, 6)
        gamma, beta = block.scale_shift(emb)
        assert beta.shape == (2, 16, 1, 1) and (gamma is None) == (mode == "add")
    with pytest.raises(ValueError, match="pass the embedding"):
        ResBlock(8, 8, emb_dim=4, norm_groups=4)(x)


def _permute_pixels(x, perm):
    b, c, h, w = x.shape
    return x.flatten(2)[:, :, perm].view(b, c, h, w)


def test_self_attention_is_equivariant_to_pixel_permutations():
    attn = SelfAttention(16, num_heads=4, norm_groups=4).eval()
    x = torch.randn(2, 16, 5, 7)
    perm = torch.randperm(35)
    assert torch.allclose(attn(_permute_pixels(x, perm)), _permute_pixels(attn(x), perm), atol=1e-5)


def test_self_attention_mixes_positions_not_only_channels():
    # Changing one far-away pixel must change the output everywhere (a global receptive field).
    attn = SelfAttention(8, num_heads=2, norm_groups=4).eval()
    x = torch.randn(1, 8, 6, 6)
    y = x.clone()
    y[..., 5, 5] += 3.0
    diff = (attn(x) - attn(y)).abs().sum(1)[0]
    assert diff[0, 0] > 1e-4


def test_cross_attention_shapes_and_context_check():
    ca = CrossAttention(8, context_dim=6, num_heads=2, norm_groups=4)
    assert ca(torch.randn(2, 8, 4, 4), torch.randn(2, 9, 6)).shape == (2, 8, 4, 4)
    with pytest.raises(ValueError, match=r"context must have shape \(2, N, 6\)"):
        ca(torch.randn(2, 8, 4, 4), torch.randn(2, 9, 5))


def test_attention_gate_outputs_gated_skip():
    gate = AttentionGate(skip_channels=8, gate_channels=16)
    x, g = torch.randn(2, 8, 12, 12), torch.randn(2, 16, 6, 6)
    out = gate(x, g)
    assert out.shape == x.shape
    alpha = gate.last_alpha
    assert alpha.shape == (2, 1, 12, 12) and 0 <= alpha.min() and alpha.max() <= 1
    assert torch.allclose(out, x * alpha)


def test_down_and_upsample_sizes():
    x = torch.randn(1, 4, 8, 8)
    assert Downsample(4)(x).shape == (1, 4, 4, 4)
    assert Upsample(4)(x).shape == (1, 4, 16, 16)
