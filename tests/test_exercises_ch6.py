"""Chapter 6 measuring tools and checkers, and the build-it checkers: the attention gate and
U-Net++'s nested nodes."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unet_edu.blocks import SelfAttention
from unet_edu.exercises.chapter6 import (
    activation_bytes, attention_matrix_bytes, check_attention_memory, check_gate_parameters,
    check_unetpp_nodes, check_volume_memory_ratio, count_flops,
)
from unet_edu.exercises.chapter6 import check_gate_forward, check_nested_nodes, with_gate_forward
from unet_edu.exercises.feedback import Feedback
from unet_edu.models import AttentionUNet, UNet3D


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


# --------------------------------------------------------------------------------------------
# Build-it exercises
# --------------------------------------------------------------------------------------------
def verdict(feedback, status):
    """The feedback's text, after checking it is one line with this status."""
    assert isinstance(feedback, Feedback)
    assert "\n" not in str(feedback)
    assert feedback.status == status, str(feedback)
    return feedback.text


def gate_forward(gate, x, g, *, resize=True, mode="bilinear", squash=torch.sigmoid,
                 relu=True, gated="x"):
    if resize:
        kwargs = {"align_corners": False} if mode == "bilinear" else {}
        g = F.interpolate(g, size=x.shape[-2:], mode=mode, **kwargs)
    s = gate.w_x(x) + gate.w_g(g)
    alpha = squash(gate.psi(F.relu(s) if relu else s))
    return {"x": x * alpha, "alpha": alpha}[gated]


def test_reference_gate_passes_and_drops_into_an_attention_unet():
    assert "equals AttentionGate" in verdict(check_gate_forward(gate_forward), "pass")
    torch.manual_seed(0)
    model = AttentionUNet(features=(4, 8, 16)).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(with_gate_forward(model, gate_forward)(x), model(x), atol=1e-6)
    with pytest.raises(ValueError, match="has no AttentionGate"):
        with_gate_forward(AttentionUNet(features=(4, 8), gates=False), gate_forward)


def test_typical_wrong_gates_get_their_own_hint():
    cases = {
        "resize it to x's grid first": lambda gt, x, g: gate_forward(gt, x, g, resize=False),
        "softmax over a single channel is always 1":
            lambda gt, x, g: gate_forward(gt, x, g, squash=lambda z: torch.softmax(z, 1)),
        "not nearest-neighbour": lambda gt, x, g: gate_forward(gt, x, g, mode="nearest"),
        "a ReLU comes between the sum": lambda gt, x, g: gate_forward(gt, x, g, relu=False),
        "you returned the gate map alpha": lambda gt, x, g: gate_forward(gt, x, g,
                                                                         gated="alpha"),
    }
    for text, fn in cases.items():
        assert text in verdict(check_gate_forward(fn), "hint")


def test_gate_bad_input():
    def my_gate_forward(gate, x, g):
        raise NotImplementedError("fill in my_gate_forward")

    assert verdict(check_gate_forward(my_gate_forward), "todo")
    assert "must take (gate, x, g)" in verdict(check_gate_forward(lambda x, g: x), "error")
    assert "pass the function" in verdict(check_gate_forward(nn.Identity()), "error")
    assert "must return a torch.Tensor" in verdict(check_gate_forward(lambda gt, x, g: 0.5),
                                                   "error")


def nested(model, x, depth, *, whole_row=True, up_last=True, pool=True, only_pruned=True):
    depth_used = depth if only_pruned else model.levels - 1
    out, h = {}, x
    for i in range(depth_used + 1):
        h = model.nodes[f"{i}_0"](h if i == 0 or not pool else model.pool(h))
        out[f"{i}_0"] = h
    for j in range(1, depth_used + 1):
        for i in range(depth_used + 1 - j):
            row = [out[f"{i}_{k}"] for k in range(j)] if whole_row else [out[f"{i}_{j - 1}"]]
            up = model.ups[f"{i}_{j}"](out[f"{i + 1}_{j - 1}"])
            row = row + [up] if up_last else [up] + row
            out[f"{i}_{j}"] = model.nodes[f"{i}_{j}"](torch.cat(row, dim=1))
    return out


def test_reference_nested_nodes_pass():
    assert "equal node_outputs" in verdict(check_nested_nodes(nested), "pass")


def test_typical_wrong_nested_nodes_get_their_own_hint():
    cases = {
        "not only the last one": lambda m, x, d: nested(m, x, d, whole_row=False),
        "the upsampled node comes last": lambda m, x, d: nested(m, x, d, up_last=False),
        "each encoder node pools the one above it": lambda m, x, d: nested(m, x, d, pool=False),
        "needs only the nodes with i + j <= d": lambda m, x, d: nested(m, x, d,
                                                                       only_pruned=False),
        "instead of calling model.node_outputs": lambda m, x, d: m.node_outputs(x, d),
    }
    for text, fn in cases.items():
        assert text in verdict(check_nested_nodes(fn), "hint")


def test_nested_nodes_bad_input():
    assert "must return a dict" in verdict(
        check_nested_nodes(lambda m, x, d: list(nested(m, x, d).values())), "error")
    assert "these nodes are missing" in verdict(
        check_nested_nodes(lambda m, x, d: {k: v for k, v in nested(m, x, d).items()
                                            if k != "0_1"}), "hint")
    assert "must take (model, x, depth)" in verdict(check_nested_nodes(lambda m: {}), "error")
