"""The baselines of chapter 1: plain stacks of 3x3 convolutions at full resolution.

:class:`NaiveCNN` is the first attempt, five layers that see 11 x 11 pixels.
:class:`DnCNN` is the same idea done right, after Zhang et al. (2017): deep enough that its
field covers a whole digit, with batch normalisation and *residual learning* (the layers
predict the noise, and the output is the input minus that prediction).  Chapter 1 uses it as
the strong control: a U-Net must beat this, not only the naive stack, to earn its shape.
"""

from __future__ import annotations

import torch
from torch import nn

from .checks import check_batch
from .config import RecordsConfig

__all__ = ["NaiveCNN", "DnCNN"]


class NaiveCNN(RecordsConfig, nn.Module):
    """``depth`` 3x3 convolutions with ReLU between them, full resolution.

    The obvious first attempt at an image-to-image network; chapter 1 uses
    it to show what goes wrong: its receptive field grows by only 2 pixels
    per layer (11x11 for ``depth=5``), it has a single scale, and
    ``forward`` accepts a timestep ``t`` only to **ignore it** -- the
    network cannot know how noisy its input is.
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64,
                 depth: int = 5, out_channels=None):
        super().__init__()
        if depth < 2:
            raise ValueError(f"NaiveCNN needs depth >= 2 (an input and an "
                             f"output layer), got {depth}")
        self.in_channels = in_channels
        if out_channels is None:
            out_channels = in_channels
        widths = [in_channels] + [hidden] * (depth - 1) + [out_channels]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Conv2d(a, b, 3, padding=1))
            if i < depth - 1:
                layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor,
                t: torch.Tensor | None = None) -> torch.Tensor:
        check_batch(x, self.in_channels, "NaiveCNN", 2,
                    self.layers[0].weight.dtype)
        return self.layers(x)  # t is ignored on purpose: see chapter 1


class DnCNN(RecordsConfig, nn.Module):
    """A plain full-resolution denoiser done right: depth, BatchNorm,
    residual learning.

    ``depth`` 3x3 convolutions of ``hidden`` channels: the first followed
    by ReLU, the middle ones by BatchNorm and ReLU, the last producing the
    *residual* (the noise estimate); the output is ``x - residual``, so the
    network only learns what to take away.  This is the design of DnCNN
    (Zhang et al., 2017, "Beyond a Gaussian denoiser").  Its receptive
    field is ``2 * depth + 1`` pixels wide: ``depth=14`` sees 29 x 29, a
    whole 28 x 28 digit from its centre.  With ``hidden=16`` it has about
    as many parameters (28,337) as chapter 1's naive stack and U-Net, and
    costs as many multiply-adds per pixel as it has weights, because every
    layer runs at full resolution.
    """

    def __init__(self, in_channels: int = 1, hidden: int = 16,
                 depth: int = 14):
        super().__init__()
        if depth < 3:
            raise ValueError(f"DnCNN needs depth >= 3 (input, middle and "
                             f"output layers), got {depth}")
        self.in_channels = in_channels
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            # BatchNorm follows each middle convolution: no biases needed.
            layers += [nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
                       nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(hidden, in_channels, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor,
                t: torch.Tensor | None = None) -> torch.Tensor:
        check_batch(x, self.in_channels, "DnCNN", 2,
                    self.layers[0].weight.dtype)
        # Residual learning: the layers estimate the noise.
        return x - self.layers(x)
