"""The original segmentation U-Net (Ronneberger, Fischer & Brox, 2015)."""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import DoubleConv
from ..validation import check_divisible, check_image

__all__ = ["UNet2015", "center_crop"]


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Cut the central ``height x width`` window out of ``x`` (the paper's "copy and crop")."""
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


class UNet2015(nn.Module):
    """Encoder, bottleneck and decoder of two-convolution blocks, joined by skip connections.

    ``features`` lists the channel width of each level from the top to the bottleneck, so
    ``len(features)`` is the number of levels and there are ``len(features) - 1`` 2x2 max-pools
    on the way down and as many 2x2 transposed convolutions on the way up.  The paper's network
    is ``features=(64, 128, 256, 512, 1024)`` with ``padding="valid"``: a 572x572 tile gives a
    388x388 map, because every unpadded 3x3 convolution trims a pixel per side and the encoder
    maps are centre-cropped before they are joined to the decoder (:meth:`paper` builds it).

    ``skip`` chooses how the encoder map joins the decoder: ``"concat"`` (the paper),
    ``"add"`` (ResNet-style sum), or ``"none"`` (no skip: an hourglass auto-encoder).
    ``norm="batch"`` adds BatchNorm after each convolution.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        features=(64, 128, 256, 512),
        padding: str = "same",
        skip: str = "concat",
        norm=None,
    ):
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        if skip not in ("concat", "add", "none"):
            raise ValueError(f"skip must be 'concat', 'add' or 'none', got {skip!r}")
        if norm not in (None, "batch"):
            raise ValueError(f"norm must be None or 'batch', got {norm!r}")
        features = tuple(int(f) for f in features)
        if len(features) < 2:
            raise ValueError(f"UNet2015 needs at least 2 levels in features, got {features}")
        self.config = dict(
            in_channels=in_channels, out_channels=out_channels, features=list(features),
            padding=padding, skip=skip, norm=norm,
        )
        self.levels = len(features)
        self.down = nn.ModuleList()
        c_prev = in_channels
        for c in features[:-1]:
            self.down.append(DoubleConv(c_prev, c, padding, norm))
            c_prev = c
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(features[-2], features[-1], padding, norm)
        self.up = nn.ModuleList()
        self.decode = nn.ModuleList()
        for c_low, c in zip(features[::-1][:-1], features[::-1][1:]):
            self.up.append(nn.ConvTranspose2d(c_low, c, 2, stride=2))
            self.decode.append(DoubleConv(2 * c if skip == "concat" else c, c, padding, norm))
        self.head = nn.Conv2d(features[0], out_channels, 1)

    @classmethod
    def paper(cls, in_channels: int = 1, out_channels: int = 2) -> "UNet2015":
        """The exact network of the 2015 paper: 5 levels, 64..1024 channels, no padding."""
        return cls(in_channels, out_channels, (64, 128, 256, 512, 1024), padding="valid")

    # -- sizes -------------------------------------------------------------------------------
    def output_size(self, n: int) -> int | None:
        """Side of the output for an input of side ``n``, or None if ``n`` does not fit."""
        if self.config["padding"] == "same":
            return n if n % 2 ** (self.levels - 1) == 0 else None
        for _ in range(self.levels - 1):  # encoder: two convs, then a pool
            n -= 4
            if n <= 0 or n % 2:
                return None
            n //= 2
        n -= 4  # bottleneck
        if n <= 0:
            return None
        for _ in range(self.levels - 1):  # decoder: up-conv doubles, two convs trim 4
            n = 2 * n - 4
        return n if n > 0 else None

    def valid_sizes_near(self, n: int) -> tuple[int | None, int | None]:
        """The closest input sides below and above ``n`` that the network accepts."""
        below = next((m for m in range(n - 1, 0, -1) if self.output_size(m)), None)
        above = next(m for m in range(n + 1, n + 2 ** (self.levels + 2) + 200) if self.output_size(m))
        return below, above

    def _check(self, x: torch.Tensor) -> None:
        check_image(x, self.config["in_channels"], "UNet2015")
        if self.config["padding"] == "same":
            check_divisible(x, self.levels, "UNet2015")
            return
        for name, n in (("height", x.shape[-2]), ("width", x.shape[-1])):
            if self.output_size(n) is None:
                lo, hi = self.valid_sizes_near(n)
                choices = " or ".join(str(s) for s in (lo, hi) if s)
                raise ValueError(
                    f"UNet2015 (padding='valid'): {name} {n} does not fit: every block trims 4 "
                    f"pixels and every pool needs an even size; use {choices} (e.g. 572 for the "
                    f"paper's 5 levels)"
                )

    # -- forward -----------------------------------------------------------------------------
    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every intermediate map by name, in the order they are computed.

        Names: ``enc{i}`` (encoder level i), ``bottleneck``, ``up{i}`` (after the up-convolution
        into level i), ``skip{i}`` (the encoder map as joined, cropped if needed), ``dec{i}``
        (decoder level i), ``out``.  Level 0 is the top of the U.
        """
        maps: dict[str, torch.Tensor] = {}
        self._run(x, maps)
        return maps

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """Segment (or denoise) ``x``; ``t`` is accepted for a common interface and ignored."""
        return self._run(x, None)

    def _run(self, x: torch.Tensor, maps: dict | None) -> torch.Tensor:
        self._check(x)

        def keep(name, value):
            if maps is not None:
                maps[name] = value
            return value

        skips = []
        h = x
        for i, block in enumerate(self.down):
            h = keep(f"enc{i}", block(h))
            skips.append(h)
            h = self.pool(h)
        h = keep("bottleneck", self.bottleneck(h))
        for j, (up, block) in enumerate(zip(self.up, self.decode)):
            i = self.levels - 2 - j
            h = keep(f"up{i}", up(h))
            if self.config["skip"] != "none":
                s = keep(f"skip{i}", center_crop(skips[i], h.shape[-2], h.shape[-1]))
                h = torch.cat([s, h], dim=1) if self.config["skip"] == "concat" else h + s
            h = keep(f"dec{i}", block(h))
        return keep("out", self.head(h))
