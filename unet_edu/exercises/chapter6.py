"""Chapter 6 — variants and pitfalls: measuring tools and exercise checkers.

Two measuring tools the chapter uses, both device-independent:

* :func:`count_flops` — floating-point operations of one forward pass, counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts as 2).  It works on
  ``meta`` tensors, so even huge inputs cost no memory and no time.
* :func:`activation_bytes` — the bytes of the tensors autograd saves for the backward pass
  during one forward pass (each storage counted once, parameters excluded): the activation
  memory that training needs on top of the weights.

The ``check_...`` functions compute the right answer with the package and compare.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import verdict
from ..blocks import AttentionGate
from ..models import UNetPlusPlus, count_parameters

__all__ = [
    "count_flops",
    "activation_bytes",
    "attention_matrix_bytes",
    "check_gate_parameters",
    "check_unetpp_nodes",
    "check_attention_memory",
    "check_volume_memory_ratio",
]


def count_flops(model, *args, **kwargs) -> int:
    """FLOPs of ``model(*args, **kwargs)`` (no gradients are recorded)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*args, **kwargs)
    return int(counter.get_total_flops())


def activation_bytes(model, *args, **kwargs) -> int:
    """Bytes of the activations autograd keeps for backward during ``model(*args, **kwargs)``.

    Every tensor saved for the backward pass is recorded through
    :func:`torch.autograd.graph.saved_tensors_hooks`; tensors sharing one storage are counted
    once, and the model's own parameters are left out.  Runs on real (not meta) tensors.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        ptr = s.data_ptr()
        if ptr not in params:
            seen[ptr] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(*args, **kwargs)
    del out
    return sum(seen.values())


def attention_matrix_bytes(side: int, heads: int = 4, batch: int = 1, bytes_per_value: int = 4) -> int:
    """Size of the attention weights ``softmax(QK^T)`` when an ``side x side`` map attends to itself.

    Every one of the ``side**2`` positions holds a weight for every position, in every head.
    """
    n = side * side
    return batch * heads * n * n * bytes_per_value


def check_gate_parameters(answer: int, skip_channels: int = 32, gate_channels: int = 64,
                          inter_channels: int | None = None) -> None:
    """How many parameters has an :class:`~unet_edu.blocks.AttentionGate` of these sizes?"""
    gate = AttentionGate(skip_channels, gate_channels, inter_channels)
    right = count_parameters(gate)
    inter = gate.w_x.out_channels
    verdict(
        int(answer) == right,
        f"{right:,} parameters: W_x {skip_channels}x{inter} (no bias), W_g {gate_channels}x{inter} "
        f"+ {inter} biases, psi {inter} + 1.",
        f"count the three 1x1 convolutions: W_x maps {skip_channels} to {inter} channels without a "
        f"bias, W_g maps {gate_channels} to {inter} with a bias, psi maps {inter} to 1 with a bias.",
    )


def check_unetpp_nodes(answer: int, levels: int = 5, depth: int | None = None) -> None:
    """How many nodes X[i, j] does a U-Net++ with ``levels`` levels compute when pruned to ``depth``?"""
    depth = levels - 1 if depth is None else depth
    model = UNetPlusPlus(features=[2] * levels).to("meta")
    x = torch.empty(1, 1, 2**depth, 2**depth, device="meta")
    right = len(model.node_outputs(x, depth))
    verdict(
        int(answer) == right,
        f"{right} nodes: the triangle i + j <= {depth} holds {depth + 1} + {depth} + ... + 1 of them.",
        f"list the nodes X[i, j] with i + j <= {depth} (row i, column j, both from 0) and count them.",
    )


def check_attention_memory(answer_mib: float, side: int = 64, heads: int = 4, batch: int = 1) -> None:
    """How many MiB does the float32 attention matrix of one self-attention layer take at ``side x side``?"""
    right = attention_matrix_bytes(side, heads, batch) / 2**20
    ok = abs(float(answer_mib) - right) <= 0.01 * right
    verdict(
        ok,
        f"{right:,.0f} MiB: {heads} heads x ({side}x{side})^2 weights x 4 bytes"
        + (f" x {batch} images." if batch > 1 else "."),
        f"each of the {side}x{side} = {side * side} positions has one weight per position, per head, "
        f"4 bytes each; divide the bytes by 2**20 for MiB.",
    )


def check_volume_memory_ratio(answer: float, model=None, side: int = 8) -> None:
    """By what factor does activation memory grow when a volume's side doubles from ``side``?"""
    if model is None:
        from ..models import UNet3D

        torch.manual_seed(0)
        model = UNet3D(features=(4, 8))
    c = model.config["in_channels"]
    small = activation_bytes(model, torch.randn(1, c, side, side, side))
    big = activation_bytes(model, torch.randn(1, c, 2 * side, 2 * side, 2 * side))
    right = big / small
    verdict(
        abs(float(answer) - right) <= 0.05 * right,
        f"the measured factor is {right:.2f}: every activation holds side^3 voxels, so doubling "
        f"the side multiplies it by 2^3.",
        "every feature map of a 3-D U-Net has D x H x W voxels; what happens to that product when "
        "each of D, H and W doubles?",
    )
