"""Chapter 6 — variants and pitfalls: measuring tools and exercise checkers.

Two measuring tools the chapter uses, both device-independent:

* :func:`count_flops` — floating-point operations of one forward pass, counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts as 2).  It works on
  ``meta`` tensors, so even huge inputs cost no memory and no time.
* :func:`activation_bytes` — the bytes of the tensors autograd saves for the backward pass
  during one forward pass (each storage counted once, parameters excluded): the activation
  memory that training needs on top of the weights.

The arithmetic ``check_...`` functions compute the right answer with the package and compare.
The build-it ones run code you write against the package's own and return one line of
:class:`~unet_edu.exercises.feedback.Feedback`:

* :func:`check_gate_forward` -- the attention gate of the Attention U-Net;
* :func:`check_nested_nodes` -- the nested nodes ``X[i, j]`` of U-Net++, pruned to a depth.

:func:`with_gate_forward` puts your gate into a (trained) Attention U-Net.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from . import verdict
from .feedback import (ReaderModule, Verdict, checker, close, hint, passed, problem,
                       replace_modules, require_callable, require_signature, require_tensor,
                       run)
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
    "check_gate_forward",
    "check_nested_nodes",
    "with_gate_forward",
]


def count_flops(model, *args, **kwargs) -> int:
    """FLOPs of ``model(*args, **kwargs)`` (no gradients are recorded)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*args, **kwargs)
    return int(counter.get_total_flops())


def activation_bytes(model, *args, **kwargs) -> int:
    """Bytes of the activations autograd keeps for backward during
    ``model(*args, **kwargs)``.

    Every tensor saved for the backward pass is recorded through
    :func:`torch.autograd.graph.saved_tensors_hooks`; tensors sharing one
    storage are counted once, and the model's own parameters are left out.
    Runs on real (not meta) tensors.
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


# --------------------------------------------------------------------------------------------
# Build-it exercises
# --------------------------------------------------------------------------------------------
_GATE = "my_gate_forward"
_NODES = "my_nested_nodes"


def _gate_variant(gate: AttentionGate, x, g, change: str = ""):
    """The attention gate with one deliberate change (a mistake signature)."""
    if g.shape[-2:] != x.shape[-2:]:
        if change == "nearest":
            g = F.interpolate(g, size=x.shape[-2:], mode="nearest")
        else:
            g = F.interpolate(g, size=x.shape[-2:], mode="bilinear",
                              align_corners=change == "align-corners")
    s = gate.w_x(x) + gate.w_g(g)
    s = s if change == "no-relu" else F.relu(s)
    logits = gate.psi(s)
    alpha = torch.softmax(logits, dim=1) if change == "softmax" else torch.sigmoid(logits)
    if change == "no-sigmoid":
        alpha = logits
    return x * alpha


_GATE_MISTAKES = (
    ("softmax", "softmax over a single channel is always 1, so your gate passes everything: "
                "the gate is a sigmoid, alpha = sigmoid(psi(...))"),
    ("no-sigmoid", "squash psi's output with a sigmoid, so that alpha lies in (0, 1)"),
    ("no-relu", "a ReLU comes between the sum W_x x + W_g g and psi"),
    ("nearest", "resize g with bilinear interpolation (mode='bilinear', align_corners=False), "
                "as the package does, not nearest-neighbour"),
    ("align-corners", "resize g with align_corners=False, as the package does"),
)


@checker
def check_gate_forward(my_gate_forward):
    """Does ``my_gate_forward(gate, x, g)`` compute what an AttentionGate computes?

    ``gate`` is an :class:`~unet_edu.blocks.AttentionGate` with its 1x1 convolutions ``w_x``,
    ``w_g`` and ``psi``; ``x`` is the encoder's skip map and ``g`` the coarser decoder map.
    Resize ``g`` to ``x``'s height and width (bilinear, ``align_corners=False``), compute
    ``alpha = sigmoid(psi(ReLU(w_x(x) + w_g(g))))`` and return ``x * alpha``.  Four cases: ``g``
    at half the size, at the same size, an odd-sized ``x`` whose ``g`` does not divide
    evenly, and a batch of one.
    """
    params = "(gate, x, g)"
    require_callable(my_gate_forward, _GATE, params)
    torch.manual_seed(12)
    gates = {(8, 16): AttentionGate(8, 16).eval(), (4, 6): AttentionGate(4, 6, 3).eval()}
    require_signature(my_gate_forward, _GATE, (gates[(8, 16)], torch.zeros(1, 8, 4, 4),
                                               torch.zeros(1, 16, 2, 2)), params)
    gen = torch.Generator().manual_seed(13)
    cases = [("g at half the size", (8, 16), (2, 8, 12, 12), (2, 16, 6, 6)),
             ("g at the same size", (8, 16), (2, 8, 6, 10), (2, 16, 6, 10)),
             ("an odd-sized x", (4, 6), (2, 4, 7, 9), (2, 6, 4, 5)),
             ("a batch of one", (4, 6), (1, 4, 10, 8), (1, 6, 5, 4))]
    for label, key, xs, gs in cases:
        gate = gates[key]
        x, g = 2 * torch.randn(xs, generator=gen), 2 * torch.randn(gs, generator=gen)
        with torch.no_grad():
            ran = run(my_gate_forward, gate, x.clone(), g.clone(), what=_GATE)
            if not ran.ok:
                if "must match the size" in ran.message and xs[-2:] != gs[-2:]:
                    raise Verdict(hint("g comes from the coarser level and is smaller than x: "
                                       "resize it to x's grid first, F.interpolate(g, "
                                       "size=x.shape[-2:], mode='bilinear', "
                                       "align_corners=False)"))
                if "must match the size" in ran.message:
                    raise Verdict(hint("resize g to exactly x's size, size=x.shape[-2:]: a "
                                       "fixed scale_factor=2 goes wrong when g already has "
                                       "x's size or x's side is odd"))
                raise Verdict(ran.failure(_GATE, f"it failed on {label}"))
            y = ran.value
            if isinstance(y, torch.Tensor) and tuple(y.shape) == (xs[0], 1) + xs[2:]:
                raise Verdict(hint("you returned the gate map alpha; the gate lets through "
                                   "x * alpha, the skip scaled pixel by pixel"))
            if isinstance(y, torch.Tensor) and y.shape[1] == gs[1] and gs[1] != xs[1]:
                raise Verdict(hint("the gate scales the skip x, not the gating signal g: "
                                   "return x * alpha"))
            y = require_tensor(y, _GATE, xs, "the gated skip has x's shape")
            want = gate(x, g)
            if close(y, want):
                continue
            for change, text in _GATE_MISTAKES:
                if close(y, _gate_variant(gate, x, g, change)):
                    raise Verdict(hint(text))
        raise Verdict(hint(f"on {label} your output differs: alpha = sigmoid(psi(ReLU(w_x(x) "
                           f"+ w_g(g_resized)))), and the gate returns x * alpha"))
    return passed("your gate equals AttentionGate with g at half and at full size, an "
                  "odd-sized x and a batch of one")


def with_gate_forward(model: nn.Module, gate_forward) -> nn.Module:
    """A copy of ``model`` whose attention gates compute ``gate_forward(gate, x, g)``.

    Each :class:`~unet_edu.blocks.AttentionGate` keeps its (trained) weights; only the
    computation is yours.  ``model`` itself is left unchanged.
    """
    twin = copy.deepcopy(model)
    count = replace_modules(twin, AttentionGate, lambda gate: ReaderModule(gate, gate_forward))
    if not count:
        raise ValueError(f"with_gate_forward: {type(model).__name__} has no AttentionGate; "
                         f"pass an AttentionUNet built with gates=True")
    return twin


# -- U-Net++'s nested nodes -------------------------------------------------------------------
class _NodeLog(nn.Module):
    def __init__(self, name, module, log):
        super().__init__()
        self.name, self.module, self.log = name, module, log

    def forward(self, x):
        self.log.append((self.name, tuple(x.shape)))
        return self.module(x)


class _UseTheNodes(Exception):
    """Raised when the reader's function calls the network's own node computation."""


def _refuse(*args, **kwargs):
    raise _UseTheNodes("compute the nodes from model.nodes, model.ups and model.pool")


def _nested_up_first(model: UNetPlusPlus, x, depth):
    """The nested nodes with the upsampled node placed first (a mistake signature)."""
    out, h = {}, x
    for i in range(depth + 1):
        h = model.nodes[f"{i}_0"](h if i == 0 else model.pool(h))
        out[f"{i}_0"] = h
    for j in range(1, depth + 1):
        for i in range(depth + 1 - j):
            row = [model.ups[f"{i}_{j}"](out[f"{i + 1}_{j - 1}"])]
            row += [out[f"{i}_{k}"] for k in range(j)]
            out[f"{i}_{j}"] = model.nodes[f"{i}_{j}"](torch.cat(row, dim=1))
    return out


@checker
def check_nested_nodes(my_nested_nodes):
    """Does ``my_nested_nodes(model, x, depth)`` compute U-Net++'s nodes ``X[i, j]``?

    Return a dict ``{"i_j": tensor}`` of every node with ``i + j <= depth``: ``X[i, 0]`` is
    ``model.nodes["i_0"]`` applied to ``x`` (i = 0) or to ``model.pool(X[i-1, 0])``; for
    ``j >= 1``, ``X[i, j] = model.nodes["i_j"](cat([X[i, 0], ..., X[i, j-1],
    model.ups["i_j"](X[i+1, j-1])]))``, as :meth:`~unet_edu.models.UNetPlusPlus.node_outputs`
    computes them.  A 4-level network is tried at depths 1, 2 and 3, on square and
    rectangular inputs and a batch of one; the network's own ``node_outputs`` refuses to run
    inside the check.
    """
    params = "(model, x, depth)"
    require_callable(my_nested_nodes, _NODES, params)
    torch.manual_seed(14)
    net = UNetPlusPlus(in_channels=1, out_channels=2, features=(2, 4, 6, 8)).eval()
    require_signature(my_nested_nodes, _NODES, (net, torch.zeros(1, 1, 8, 8), 1), params)
    gen = torch.Generator().manual_seed(15)
    for depth, shape in ((3, (2, 1, 16, 16)), (1, (1, 1, 8, 24)), (2, (1, 1, 12, 20))):
        x = torch.randn(shape, generator=gen)
        log: list = []
        twin = copy.deepcopy(net)
        for key in list(twin.nodes.keys()):
            twin.nodes[key] = _NodeLog(f"X[{key.replace('_', ', ')}]", twin.nodes[key], log)
        twin.node_outputs = twin.forward = twin.forward_all = _refuse
        label = f"depth {depth}, x of shape {shape}"
        with torch.no_grad():
            ran = run(my_nested_nodes, twin, x.clone(), depth, what=_NODES)
            want = net.node_outputs(x, depth)
        for name, got_shape in log:
            i, j = (int(v) for v in name[2:-1].split(", "))
            need = net.nodes[f"{i}_{j}"][0].in_channels
            if j >= 1 and got_shape[1] != need:
                if got_shape[1] == 2 * net.nodes[f"{i}_0"][0].out_channels and j > 1:
                    raise Verdict(hint(f"{name} received {got_shape[1]} channels, {need} "
                                       f"expected: a node concatenates every earlier node of "
                                       f"its row, X[{i}, 0] ... X[{i}, {j - 1}], and the "
                                       f"upsampled X[{i + 1}, {j - 1}], not only the last "
                                       f"one"))
                raise Verdict(hint(f"{name} received {got_shape[1]} channels where {need} are "
                                   f"expected: X[i, j] reads cat([X[i, 0], ..., X[i, j-1], "
                                   f"ups['i_j'](X[i+1, j-1])])"))
            if j == 0 and i >= 1 and got_shape[-2:] != tuple(
                    s // 2**i for s in shape[-2:]):
                raise Verdict(hint(f"{name} received a {got_shape[-2]} x {got_shape[-1]} map; "
                                   f"each encoder node pools the one above it: X[i, 0] = "
                                   f"nodes['i_0'](model.pool(X[i-1, 0]))"))
        if not ran.ok:
            if isinstance(ran.error, _UseTheNodes):
                raise Verdict(hint("compute the nodes yourself from model.nodes, model.ups "
                                   "and model.pool instead of calling model.node_outputs"))
            if isinstance(ran.error, KeyError):
                raise Verdict(hint(f"a node was needed before it was computed ({ran.message}):"
                                   f" compute the encoder column X[i, 0] first, then the "
                                   f"columns j = 1, 2, ... left to right"))
            raise Verdict(ran.failure(_NODES, f"it failed at {label}"))
        nodes = ran.value
        if not isinstance(nodes, dict):
            raise Verdict(problem(f"`{_NODES}` must return a dict {{'i_j': tensor}}, got a "
                                  f"{type(nodes).__name__}"))
        missing = sorted(set(want) - set(nodes))
        extra = sorted(set(nodes) - set(want))
        if missing:
            raise Verdict(hint(f"at {label} these nodes are missing: "
                               f"{', '.join(missing[:4])}; return every node with i + j <= "
                               f"depth, keyed 'i_j'"))
        if extra:
            raise Verdict(hint(f"at {label} you computed {', '.join(extra[:4])} too: a network "
                               f"pruned to depth d needs only the nodes with i + j <= d"))
        for key in sorted(want, key=lambda k: (int(k.split('_')[1]), int(k.split('_')[0]))):
            value = nodes[key]
            if not isinstance(value, torch.Tensor) or not close(value, want[key]):
                if isinstance(value, torch.Tensor):
                    with torch.no_grad():
                        swapped = _nested_up_first(net, x, depth)
                    if close(value, swapped[key]):
                        raise Verdict(hint("the upsampled node comes last in the "
                                           "concatenation: cat([X[i, 0], ..., X[i, j-1], "
                                           "up(X[i+1, j-1])])"))
                raise Verdict(hint(f"at {label} node X[{key.replace('_', ', ')}] differs: "
                                   f"X[i, j] = nodes['i_j'](cat([X[i, 0], ..., X[i, j-1], "
                                   f"ups['i_j'](X[i+1, j-1])]))"))
    return passed("your nodes equal node_outputs at depths 1, 2 and 3, square and "
                  "rectangular inputs, batch 1 and 2")
