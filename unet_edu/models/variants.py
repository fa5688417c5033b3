"""Three descendants of the 2015 U-Net, built from the same blocks.

* :class:`AttentionUNet` (Oktay et al., 2018): every skip connection passes through an
  :class:`~unet_edu.blocks.AttentionGate` that the coarser decoder signal controls, so the
  decoder can switch off encoder features that belong to irrelevant regions.
* :class:`UNetPlusPlus` (Zhou et al., 2018): the plain skips are replaced by nested, densely
  connected decoder nodes ``X[i, j]``; every top node ``X[0, j]`` has its own output head, which
  allows deep supervision and, at inference, pruning the network to a shallower depth.
* :class:`UNet3D` (Cicek et al., 2016): the same U with ``Conv3d``, ``MaxPool3d`` and
  ``ConvTranspose3d`` for volumes ``(B, C, D, H, W)``.

Attention U-Net and 3D U-Net are :class:`~unet_edu.models.skeleton.UNetSkeleton` with one
change each (a gated join; ``dims=3``).  All three keep their arguments in ``self.config`` and
check their input first, like the other models of the package.  ``norm`` is ``None``,
``"batch"`` or ``"group"`` (GroupNorm with ``norm_groups`` groups, which does not depend on the
batch size).
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import AttentionGate, DoubleConv, norm_factory
from .checks import check_batch, check_halvings
from .config import RecordsConfig
from .skeleton import UNetSkeleton, check_features

__all__ = ["AttentionUNet", "UNetPlusPlus", "UNet3D"]


# ----------------------------------------------------------------------------------------------
class AttentionUNet(RecordsConfig, UNetSkeleton):
    """The U-Net of :class:`~unet_edu.models.UNet2015` (same padding) with
    gated skips.

    Before the decoder at level ``i`` joins the encoder map ``skip_i``, a
    gate computes ``alpha_i = sigmoid(psi(ReLU(W_x skip_i + W_g g)))``
    from ``skip_i`` and the coarser decoder map ``g`` (the one about to be
    upsampled), and only ``alpha_i * skip_i`` is concatenated.
    ``gates=False`` builds the same network without gates (an ungated
    U-Net).
    :meth:`gate_maps` returns the last ``alpha`` of every level, top level
    first.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2,
                 features=(64, 128, 256, 512),
                 norm=None, norm_groups: int = 8, gates: bool = True):
        features = check_features(features, "AttentionUNet")
        norm = norm_factory(norm, 2, norm_groups, "AttentionUNet")
        gate = AttentionGate if gates else (lambda c, c_low: nn.Identity())
        super().__init__(in_channels, out_channels, features, norm=norm,
                         gate=gate)

    def join(self, level, skip, up, coarse):
        """The one change to the U: the coarser decoder map gates the skip
        before concatenation."""
        if self.config["gates"]:
            skip = self.gates[self.levels - 2 - level](skip, coarse)
        return torch.cat([skip, up], dim=1)

    def gate_maps(self) -> list[torch.Tensor]:
        """The gate maps ``alpha`` ``(B, 1, H_i, W_i)`` of the last forward
        pass, top first."""
        if not self.config["gates"]:
            raise ValueError(
                "this AttentionUNet was built with gates=False: "
                "it has no gate maps")
        maps = [g.last_alpha for g in self.gates]
        if any(m is None for m in maps):
            raise ValueError(
                "no gate maps yet: run the model on an input first")
        return maps[::-1]


# ----------------------------------------------------------------------------------------------
class UNetPlusPlus(RecordsConfig, nn.Module):
    """U-Net++: nested, dense skip pathways between encoder and decoder.

    Node ``X[i, 0]`` is the encoder at level ``i`` (a :class:`~unet_edu.blocks.DoubleConv`
    after a 2x2 max-pool).  Node ``X[i, j]`` for ``j >= 1`` concatenates every earlier node of
    its row, ``X[i, 0] .. X[i, j-1]``, with the upsampled ``X[i+1, j-1]`` and applies a
    DoubleConv, so it sees ``(j + 1) * features[i]`` channels.  Each top node ``X[0, j]`` (``j = 1 .. L-1``) has a
    1x1 output head.

    ``forward(x, depth=d)`` computes only the nodes with ``i + j <= d`` and returns the head of
    ``X[0, d]``: the network *pruned* to depth ``d`` (default: the full depth ``L - 1``).  With
    deep supervision (train on the mean loss of :meth:`forward_all`) every pruned network is a
    usable segmenter on its own.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2,
                 features=(32, 64, 128, 256, 512), norm=None, norm_groups: int = 8):
        super().__init__()
        features = check_features(features, "UNetPlusPlus")
        norm = norm_factory(norm, 2, norm_groups, "UNetPlusPlus")
        self.levels = L = len(features)
        self.pool = nn.MaxPool2d(2)
        self.nodes = nn.ModuleDict()
        self.ups = nn.ModuleDict()
        for i in range(L):
            cin = in_channels if i == 0 else features[i - 1]
            self.nodes[f"{i}_0"] = DoubleConv(cin, features[i], "same", norm)
        for j in range(1, L):
            for i in range(L - j):
                self.ups[f"{i}_{j}"] = nn.ConvTranspose2d(features[i + 1], features[i], 2, stride=2)
                cin = (j + 1) * features[i]  # X[i, 0..j-1] and the upsampled X[i+1, j-1]
                self.nodes[f"{i}_{j}"] = DoubleConv(cin, features[i], "same", norm)
        self.heads = nn.ModuleList(nn.Conv2d(features[0], out_channels, 1) for _ in range(1, L))

    def _check(self, x: torch.Tensor, depth: int) -> None:
        check_batch(x, self.config["in_channels"], "UNetPlusPlus", 2, self.heads[0].weight.dtype)
        if not 1 <= depth <= self.levels - 1:
            raise ValueError(f"UNetPlusPlus: depth must be 1..{self.levels - 1}, got {depth}")
        check_halvings(x, depth + 1, "UNetPlusPlus")

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

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None,
                depth: int | None = None) -> torch.Tensor:
        """Segment ``x`` with the network pruned to ``depth`` (default: full); ``t`` is ignored."""
        depth = self.levels - 1 if depth is None else int(depth)
        nodes = self.node_outputs(x, depth)  # checks x and depth first
        return self.heads[depth - 1](nodes[f"0_{depth}"])

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of all heads ``X[0, 1] .. X[0, L-1]`` from one pass (deep supervision)."""
        out = self.node_outputs(x)
        return [head(out[f"0_{j}"]) for j, head in enumerate(self.heads, start=1)]


# ----------------------------------------------------------------------------------------------
class UNet3D(RecordsConfig, UNetSkeleton):
    """The U-Net for volumes: every 2-D layer of the U becomes its 3-D
    counterpart.

    Input ``(B, C, D, H, W)``; each of ``len(features) - 1`` 2x2x2
    max-pools halves depth, height and width, so all three must be
    divisible by ``2 ** (len(features) - 1)``.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2,
                 features=(32, 64, 128, 256),
                 norm=None, norm_groups: int = 8):
        features = check_features(features, "UNet3D")
        norm = norm_factory(norm, 3, norm_groups, "UNet3D")
        super().__init__(in_channels, out_channels, features, dims=3,
                         norm=norm)
