"""The original segmentation U-Net (Ronneberger, Fischer & Brox, 2015)."""

from __future__ import annotations

import torch

from ..blocks import norm_factory
from .checks import check_batch
from .config import RecordsConfig
from .skeleton import UNetSkeleton, center_crop, check_features

__all__ = ["UNet2015", "center_crop"]


class UNet2015(RecordsConfig, UNetSkeleton):
    """Encoder, bottleneck and decoder of two-convolution blocks, joined by skip connections.

    ``features`` lists the channel width of each level from the top to the bottleneck, so
    ``len(features)`` is the number of levels and there are ``len(features) - 1`` 2x2 max-pools
    on the way down and as many 2x2 transposed convolutions on the way up.  The paper's network
    is ``features=(64, 128, 256, 512, 1024)`` with ``padding="valid"``: a 572x572 tile gives a
    388x388 map, because every unpadded 3x3 convolution trims a pixel per side and the encoder
    maps are centre-cropped before they are joined to the decoder (:meth:`paper` builds it).

    ``skip`` chooses how the encoder map joins the decoder: ``"concat"`` (the paper),
    ``"add"`` (ResNet-style sum), or ``"none"`` (no skip: an hourglass auto-encoder).
    ``norm="batch"`` adds BatchNorm after each convolution.  The U itself is
    :class:`~unet_edu.models.skeleton.UNetSkeleton`; this class adds the paper's sizes.
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
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        if skip not in ("concat", "add", "none"):
            raise ValueError(f"skip must be 'concat', 'add' or 'none', got {skip!r}")
        if norm not in (None, "batch"):
            raise ValueError(f"norm must be None or 'batch', got {norm!r}")
        super().__init__(in_channels, out_channels, check_features(features, "UNet2015"),
                         padding=padding, norm=norm_factory(norm), skip=skip)

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
        search = range(n + 1, n + 2 ** (self.levels + 2) + 200)
        above = next(m for m in search if self.output_size(m))
        return below, above

    def check_input(self, x: torch.Tensor) -> None:
        """With valid padding every block trims 4 pixels, so only some sizes fit (see above)."""
        if self.config["padding"] == "same":
            return super().check_input(x)
        check_batch(x, self.in_channels, "UNet2015", 2, self.head.weight.dtype)
        for name, n in (("height", x.shape[-2]), ("width", x.shape[-1])):
            if self.output_size(n) is None:
                lo, hi = self.valid_sizes_near(n)
                choices = " or ".join(str(s) for s in (lo, hi) if s)
                raise ValueError(
                    f"UNet2015 (padding='valid'): {name} {n} does not fit: every block trims 4 "
                    f"pixels and every pool needs an even size; use {choices} (e.g. 572 for the "
                    f"paper's 5 levels)"
                )
