"""Chapter 4's build-it checkers: the sinusoidal embedding and the ResBlock's scale-shift."""

import math

import torch
import torch.nn.functional as F

from unet_edu.blocks import SinusoidalTimeEmbedding
from unet_edu.exercises.chapter4 import (check_resblock_forward, check_time_embedding,
                                         diffusion_unet_with, embedding_variant)
from unet_edu.exercises.feedback import Feedback
from unet_edu.models import DiffusionUNet


def verdict(feedback, status):
    """The feedback's text, after checking it is one line with this status."""
    assert isinstance(feedback, Feedback)
    assert "\n" not in str(feedback)
    assert feedback.status == status, str(feedback)
    return feedback.text


# -- the embedding --------------------------------------------------------------------------
def embedding(t, dim, max_period=10000.0, *, divisor=None, order="sin-cos", stack=False,
              frequencies=None):
    half = dim // 2
    k = torch.arange(frequencies or half, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * k / (divisor(half) if divisor else half))
    angles = t.float()[:, None] * freqs[None, :]
    parts = [angles.sin(), angles.cos()] if order == "sin-cos" else [angles.cos(), angles.sin()]
    if stack:
        return torch.stack(parts, dim=2).flatten(1)
    return torch.cat(parts, dim=1)


def test_variant_without_change_is_the_package():
    t = torch.tensor([0, 3, 999])
    assert torch.allclose(embedding_variant(t, 16).float(), SinusoidalTimeEmbedding(16)(t),
                          atol=1e-3)


def test_reference_embedding_passes():
    assert "equals SinusoidalTimeEmbedding" in verdict(check_time_embedding(embedding), "pass")


def test_typical_wrong_embeddings_get_their_own_hint():
    cases = {
        "the sin and cos halves are swapped": lambda t, d, p: embedding(t, d, p, order="cos"),
        "you interleaved sin and cos": lambda t, d, p: embedding(t, d, p, stack=True),
        "you divided the exponent by dim/2 - 1":
            lambda t, d, p: embedding(t, d, p, divisor=lambda h: h - 1),
        "dim counts sines and cosines together":
            lambda t, d, p: embedding(t, d, p, frequencies=d),
        "use the max_period argument": lambda t, d, p: embedding(t, d),
        "your frequencies rise": lambda t, d, p: embedding(t, d, p, divisor=lambda h: -h),
    }
    for text, fn in cases.items():
        assert text in verdict(check_time_embedding(fn), "hint")


def test_embedding_bad_input():
    def no_grid(t, dim, max_period=10000.0):
        freqs = torch.exp(-math.log(max_period) * torch.arange(dim // 2) / (dim // 2))
        return torch.cat([(t * freqs).sin(), (t * freqs).cos()])

    assert "make a (B, dim/2) grid of angles" in verdict(check_time_embedding(no_grid), "hint")
    assert "return float32" in verdict(
        check_time_embedding(lambda t, d, p: embedding(t, d, p).double()), "hint")
    assert "must take (t, dim, max_period)" in verdict(check_time_embedding(lambda t: t),
                                                       "error")
    assert "returned shape" in verdict(
        check_time_embedding(lambda t, d, p: embedding(t, d, p)[0]), "hint")


# -- the ResBlock ---------------------------------------------------------------------------
def resblock(block, x, emb, *, before_norm=False, gain="1+gamma", swap=False, skip=True,
             reshape=True):
    h = block.conv1(F.silu(block.norm1(x)))
    p = block.emb_proj(emb)
    gamma, beta = (p[:, :, None, None] if reshape else p).chunk(2, dim=1)
    if swap:
        gamma, beta = beta, gamma
    scale = (1 + gamma) if gain == "1+gamma" else gamma
    if before_norm:
        h = block.norm2(h * scale + beta)
    else:
        h = block.norm2(h) * scale + beta
    h = block.conv2(block.dropout(F.silu(h)))
    return (block.skip(x) if skip else x) + h


def test_reference_resblock_passes():
    assert "equals ResBlock's" in verdict(check_resblock_forward(resblock), "pass")


def test_typical_wrong_resblocks_get_their_own_hint():
    cases = {
        "you scaled and shifted before block.norm2":
            lambda b, x, e: resblock(b, x, e, before_norm=True),
        "the gain is 1 + gamma, not gamma": lambda b, x, e: resblock(b, x, e, gain="gamma"),
        "gamma and beta are swapped": lambda b, x, e: resblock(b, x, e, swap=True),
        "x must pass block.skip": lambda b, x, e: resblock(b, x, e, skip=False),
        "reshape them to (B, C, 1, 1)": lambda b, x, e: resblock(b, x, e, reshape=False),
    }
    for text, fn in cases.items():
        assert text in verdict(check_resblock_forward(fn), "hint")


def test_resblock_bad_input():
    assert "write the computation with the block's parts" in verdict(
        check_resblock_forward(lambda block, x, emb: block(x, emb)), "hint")
    assert "the embedding never reached the block" in verdict(
        check_resblock_forward(lambda block, x, emb: block.skip(x)), "hint")
    assert "must take (block, x, emb)" in verdict(check_resblock_forward(lambda x: x), "error")


def test_the_readers_parts_drop_into_a_diffusion_unet():
    torch.manual_seed(0)
    model = DiffusionUNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, norm_groups=4,
                          num_heads=2).eval()
    mine = diffusion_unet_with(model, embedding, resblock)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0, 999])
    with torch.no_grad():
        assert torch.allclose(mine(x, t), model(x, t), atol=1e-5)
        wrong = diffusion_unet_with(model, lambda t, d, p: embedding(t, d, p, order="cos"))
        assert not torch.allclose(wrong(x, t), model(x, t), atol=1e-3)
