"""Chapter 6 measuring tools and checkers."""

import torch
from torch import nn

from unet_edu.blocks import SelfAttention
from unet_edu.exercises.chapter6 import (
    activation_bytes, attention_matrix_bytes, check_attention_memory, check_gate_parameters,
    check_unetpp_nodes, check_volume_memory_ratio, count_flops,
)
from unet_edu.models import UNet3D


def test_count_flops_matches_hand_count_and_works_on_meta():
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    x = torch.randn(1, 4, 10, 10)
    assert count_flops(conv, x) == 2 * 4 * 8 * 9 * 10 * 10
    big = nn.Conv2d(4, 8, 3, padding=1).to("meta")
    assert count_flops(big, torch.empty(1, 4, 1000, 1000, device="meta")) == 2 * 4 * 8 * 9 * 10**6


def test_attention_flops_grow_with_square_of_tokens():
    a = SelfAttention(16, 2, 8).to("meta")
    f = [count_flops(a, torch.empty(1, 16, s, s, device="meta")) for s in (32, 64)]
    assert 14 < f[1] / f[0] <= 16  # tokens x4, quadratic term dominates


def test_activation_bytes_counts_saved_tensors_once():
    lin = nn.Linear(5, 3, bias=False)
    x = torch.randn(7, 5)
    assert activation_bytes(lin, x) == 7 * 5 * 4  # only the input is saved for the weight gradient
    m = UNet3D(features=(4, 8))
    a = activation_bytes(m, torch.randn(1, 1, 4, 4, 4))
    b = activation_bytes(m, torch.randn(1, 1, 8, 8, 8))
    assert b == 8 * a


def test_attention_matrix_bytes():
    assert attention_matrix_bytes(16, heads=4) == 4 * 256 * 256 * 4


def test_checkers_accept_right_and_reject_wrong(grade):
    assert grade(check_gate_parameters, 32 * 16 + 64 * 16 + 16 + 16 + 1)
    assert not grade(check_gate_parameters, 1000)
    assert grade(check_unetpp_nodes, 15, levels=5) and grade(check_unetpp_nodes, 6, levels=5, depth=2)
    assert not grade(check_unetpp_nodes, 10, levels=5)
    assert grade(check_attention_memory, 256.0, side=64, heads=4)
    assert not grade(check_attention_memory, 64.0, side=64, heads=4)
    assert grade(check_volume_memory_ratio, 8) and not grade(check_volume_memory_ratio, 4)
