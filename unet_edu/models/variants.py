"""Three descendants of the 2015 U-Net, built from the same blocks.

* :class:`AttentionUNet` (Oktay et al., 2018): every skip connection passes through an
  :class:`~unet_edu.blocks.AttentionGate` that the coarser decoder signal controls, so the
  decoder can switch off encoder features that belong to irrelevant regions.
* :class:`UNetPlusPlus` (Zhou et al., 2018): the plain skips are replaced by nested, densely
  connected decoder nodes ``X[i, j]``; every top node ``X[0, j]`` has its own output head, which
  allows deep supervision and, at inference, pruning the network to a shallower depth.
* :class:`UNet3D` (Cicek et al., 2016): the same U with ``Conv3d``, ``MaxPool3d`` and
  ``ConvTranspose3d`` for volumes ``(B, C, D, H, W)``.

All three keep their arguments in ``self.config`` and check their input first, like the other
models of the package.  ``norm`` is ``None``, ``"batch"`` or ``"group"`` (GroupNorm with
``norm_groups`` groups, which does not depend on the batch size).
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import AttentionGate, DoubleConv, group_norm
from ..validation import check_divisible, check_groups, check_image, nearest_multiples

__all__ = ["AttentionUNet", "UNetPlusPlus", "UNet3D", "DoubleConv3d", "conv_block"]

_NORMS = (None, "batch", "group")


def _check_norm(norm, norm_groups: int, features, model: str) -> None:
    if norm not in _NORMS:
        raise ValueError(f"{model}: norm must be None, 'batch' or 'group', got {norm!r}")
    if norm == "group":
        for c in features:
            check_groups(int(c), norm_groups, f"{model} ({c} channels)")


def _check_features(features, model: str) -> tuple[int, ...]:
    features = tuple(int(f) for f in features)
    if len(features) < 2:
        raise ValueError(f"{model} needs at least 2 levels in features, got {features}")
    return features


def conv_block(in_channels: int, out_channels: int, norm=None, norm_groups: int = 8) -> DoubleConv:
    """The package's :class:`~unet_edu.blocks.DoubleConv` (same padding), with GroupNorm if asked.

    For ``norm="group"`` the block is built with BatchNorm and each BatchNorm is swapped for a
    GroupNorm of ``norm_groups`` groups — the one-line fix for small batches.
    """
    block = DoubleConv(in_channels, out_channels, "same", None if norm is None else "batch")
    if norm == "group":
        for k, layer in enumerate(block):
            if isinstance(layer, nn.BatchNorm2d):
                block[k] = group_norm(layer.num_features, norm_groups, f"conv_block({out_channels})")
    return block


# ----------------------------------------------------------------------------------------------
class AttentionUNet(nn.Module):
    """The U-Net of :class:`~unet_edu.models.UNet2015` (same padding) with gated skips.

    Before the decoder at level ``i`` joins the encoder map ``skip_i``, a gate computes
    ``alpha_i = sigmoid(psi(ReLU(W_x skip_i + W_g g)))`` from ``skip_i`` and the coarser decoder
    map ``g`` (the one about to be upsampled), and only ``alpha_i * skip_i`` is concatenated.
    ``gates=False`` builds the same network without gates (an ungated U-Net).
    :meth:`gate_maps` returns the last ``alpha`` of every level, top level first.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2, features=(64, 128, 256, 512),
                 norm=None, norm_groups: int = 8, gates: bool = True):
        super().__init__()
        features = _check_features(features, "AttentionUNet")
        _check_norm(norm, norm_groups, features, "AttentionUNet")
        self.config = dict(in_channels=in_channels, out_channels=out_channels,
                           features=list(features), norm=norm, norm_groups=norm_groups,
                           gates=bool(gates))
        self.levels = len(features)
        self.down = nn.ModuleList()
        c_prev = in_channels
        for c in features[:-1]:
            self.down.append(conv_block(c_prev, c, norm, norm_groups))
            c_prev = c
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = conv_block(features[-2], features[-1], norm, norm_groups)
        self.gates = nn.ModuleList()
        self.up = nn.ModuleList()
        self.decode = nn.ModuleList()
        for c_low, c in zip(features[::-1][:-1], features[::-1][1:]):
            self.gates.append(AttentionGate(c, c_low) if gates else nn.Identity())
            self.up.append(nn.ConvTranspose2d(c_low, c, 2, stride=2))
            self.decode.append(conv_block(2 * c, c, norm, norm_groups))
        self.head = nn.Conv2d(features[0], out_channels, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """Segment ``x``; ``t`` is accepted for a common interface and ignored."""
        check_image(x, self.config["in_channels"], "AttentionUNet")
        check_divisible(x, self.levels, "AttentionUNet")
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottleneck(h)
        for j, (gate, up, block) in enumerate(zip(self.gates, self.up, self.decode)):
            s = skips[self.levels - 2 - j]
            if self.config["gates"]:
                s = gate(s, h)  # h is the coarser gating signal g
            h = block(torch.cat([s, up(h)], dim=1))
        return self.head(h)

    def gate_maps(self) -> list[torch.Tensor]:
        """The gate maps ``alpha`` ``(B, 1, H_i, W_i)`` of the last forward pass, top level first."""
        if not self.config["gates"]:
            raise ValueError("this AttentionUNet was built with gates=False: it has no gate maps")
        maps = [g.last_alpha for g in self.gates]
        if any(m is None for m in maps):
            raise ValueError("no gate maps yet: run the model on an input first")
        return maps[::-1]


# ----------------------------------------------------------------------------------------------
class UNetPlusPlus(nn.Module):
    """U-Net++: nested, dense skip pathways between encoder and decoder.

    Node ``X[i, 0]`` is the encoder at level ``i`` (a :func:`conv_block` after a 2x2 max-pool).
    Node ``X[i, j]`` for ``j >= 1`` concatenates every earlier node of its row,
    ``X[i, 0] .. X[i, j-1]``, with the upsampled ``X[i+1, j-1]`` and applies a conv block, so it
    sees ``(j + 1) * features[i]`` channels.  Each top node ``X[0, j]`` (``j = 1 .. L-1``) has a
    1x1 output head.

    ``forward(x, depth=d)`` computes only the nodes with ``i + j <= d`` and returns the head of
    ``X[0, d]``: the network *pruned* to depth ``d`` (default: the full depth ``L - 1``).  With
    deep supervision (train on the mean loss of :meth:`forward_all`) every pruned network is a
    usable segmenter on its own.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2, features=(32, 64, 128, 256, 512),
                 norm=None, norm_groups: int = 8):
        super().__init__()
        features = _check_features(features, "UNetPlusPlus")
        _check_norm(norm, norm_groups, features, "UNetPlusPlus")
        self.config = dict(in_channels=in_channels, out_channels=out_channels,
                           features=list(features), norm=norm, norm_groups=norm_groups)
        self.levels = L = len(features)
        self.pool = nn.MaxPool2d(2)
        self.nodes = nn.ModuleDict()
        self.ups = nn.ModuleDict()
        for i in range(L):
            cin = in_channels if i == 0 else features[i - 1]
            self.nodes[f"{i}_0"] = conv_block(cin, features[i], norm, norm_groups)
        for j in range(1, L):
            for i in range(L - j):
                self.ups[f"{i}_{j}"] = nn.ConvTranspose2d(features[i + 1], features[i], 2, stride=2)
                self.nodes[f"{i}_{j}"] = conv_block((j + 1) * features[i], features[i], norm, norm_groups)
        self.heads = nn.ModuleList(nn.Conv2d(features[0], out_channels, 1) for _ in range(1, L))

    def _check(self, x: torch.Tensor, depth: int) -> None:
        check_image(x, self.config["in_channels"], "UNetPlusPlus")
        if not 1 <= depth <= self.levels - 1:
            raise ValueError(f"UNetPlusPlus: depth must be 1..{self.levels - 1}, got {depth}")
        check_divisible(x, depth + 1, "UNetPlusPlus")

    def node_outputs(self, x: torch.Tensor, depth: int | None = None) -> dict[str, torch.Tensor]:
        """Every node ``"i_j"`` with ``i + j <= depth``, computed once each."""
        depth = self.levels - 1 if depth is None else int(depth)
        self._check(x, depth)
        out: dict[str, torch.Tensor] = {}
        h = x
        for i in range(depth + 1):  # the encoder column X[i, 0]
            h = self.nodes[f"{i}_0"](h if i == 0 else self.pool(h))
            out[f"{i}_0"] = h
        for j in range(1, depth + 1):  # then the diagonals, left to right
            for i in range(depth + 1 - j):
                row = [out[f"{i}_{k}"] for k in range(j)]
                row.append(self.ups[f"{i}_{j}"](out[f"{i + 1}_{j - 1}"]))
                out[f"{i}_{j}"] = self.nodes[f"{i}_{j}"](torch.cat(row, dim=1))
        return out

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, depth: int | None = None) -> torch.Tensor:
        """Segment ``x`` with the network pruned to ``depth`` (default: full); ``t`` is ignored."""
        depth = self.levels - 1 if depth is None else int(depth)
        nodes = self.node_outputs(x, depth)  # checks x and depth first
        return self.heads[depth - 1](nodes[f"0_{depth}"])

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of all heads ``X[0, 1] .. X[0, L-1]`` from one pass (for deep supervision)."""
        out = self.node_outputs(x)
        return [head(out[f"0_{j}"]) for j, head in enumerate(self.heads, start=1)]


# ----------------------------------------------------------------------------------------------
class DoubleConv3d(nn.Sequential):
    """Two 3x3x3 convolutions (same padding), each followed by an optional norm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm=None, norm_groups: int = 8):
        layers: list[nn.Module] = []
        for i, o in ((in_channels, out_channels), (out_channels, out_channels)):
            layers.append(nn.Conv3d(i, o, 3, padding=1, bias=norm is None))
            if norm == "batch":
                layers.append(nn.BatchNorm3d(o))
            elif norm == "group":
                layers.append(group_norm(o, norm_groups, f"DoubleConv3d({out_channels})"))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def _check_volume(x: torch.Tensor, in_channels: int, levels: int, model: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{model} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 5:
        hint = " (one volume without a batch axis? use x.unsqueeze(0))" if x.dim() == 4 else ""
        raise ValueError(
            f"{model} expects a batch of volumes of shape (B, C, D, H, W); got shape {tuple(x.shape)}{hint}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{model} was built for {in_channels} input channel(s) but got {x.shape[1]}; build it "
            f"with in_channels={x.shape[1]}"
        )
    m = 2 ** (levels - 1)
    for name, n in zip(("depth", "height", "width"), x.shape[-3:]):
        if n % m:
            lo, hi = nearest_multiples(n, m)
            raise ValueError(
                f"{model}: {name} {n} is not divisible by {m} (2^{levels - 1} for {levels} levels); "
                f"use {lo} or {hi}, or pad the volume"
            )


class UNet3D(nn.Module):
    """The U-Net for volumes: every 2-D layer of the U becomes its 3-D counterpart.

    Input ``(B, C, D, H, W)``; each of ``len(features) - 1`` 2x2x2 max-pools halves depth,
    height and width, so all three must be divisible by ``2 ** (len(features) - 1)``.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2, features=(32, 64, 128, 256),
                 norm=None, norm_groups: int = 8):
        super().__init__()
        features = _check_features(features, "UNet3D")
        _check_norm(norm, norm_groups, features, "UNet3D")
        self.config = dict(in_channels=in_channels, out_channels=out_channels,
                           features=list(features), norm=norm, norm_groups=norm_groups)
        self.levels = len(features)
        self.down = nn.ModuleList()
        c_prev = in_channels
        for c in features[:-1]:
            self.down.append(DoubleConv3d(c_prev, c, norm, norm_groups))
            c_prev = c
        self.pool = nn.MaxPool3d(2)
        self.bottleneck = DoubleConv3d(features[-2], features[-1], norm, norm_groups)
        self.up = nn.ModuleList()
        self.decode = nn.ModuleList()
        for c_low, c in zip(features[::-1][:-1], features[::-1][1:]):
            self.up.append(nn.ConvTranspose3d(c_low, c, 2, stride=2))
            self.decode.append(DoubleConv3d(2 * c, c, norm, norm_groups))
        self.head = nn.Conv3d(features[0], out_channels, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """Segment the volume ``x``; ``t`` is accepted for a common interface and ignored."""
        _check_volume(x, self.config["in_channels"], self.levels, "UNet3D")
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottleneck(h)
        for j, (up, block) in enumerate(zip(self.up, self.decode)):
            h = block(torch.cat([skips[self.levels - 2 - j], up(h)], dim=1))
        return self.head(h)
