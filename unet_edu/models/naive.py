"""The baseline of chapter 1: a plain stack of 3x3 convolutions at full resolution."""

from __future__ import annotations

import torch
from torch import nn

from .checks import check_batch
from .config import RecordsConfig

__all__ = ["NaiveCNN"]


class NaiveCNN(RecordsConfig, nn.Module):
    """``depth`` 3x3 convolutions with ReLU between them, never changing resolution.

    This is the obvious first attempt at an image-to-image network, and chapter 1 uses it to
    show what goes wrong: its receptive field grows by only 2 pixels per layer (11x11 for
    ``depth=5``), it has a single scale, and ``forward`` accepts a timestep ``t`` only to
    **ignore it** — the network cannot know how noisy its input is.
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, depth: int = 5, out_channels=None):
        super().__init__()
        if depth < 2:
            raise ValueError(
                f"NaiveCNN needs depth >= 2 (an input and an output layer), got {depth}"
            )
        self.in_channels = in_channels
        out_channels = in_channels if out_channels is None else out_channels
        widths = [in_channels] + [hidden] * (depth - 1) + [out_channels]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Conv2d(a, b, 3, padding=1))
            if i < depth - 1:
                layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        check_batch(x, self.in_channels, "NaiveCNN", 2, self.layers[0].weight.dtype)
        return self.layers(x)  # t is ignored on purpose: see chapter 1
