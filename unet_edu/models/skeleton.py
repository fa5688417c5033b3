"""The U itself: encoder, bottleneck, decoder and head, shared by three networks.

:class:`~unet_edu.models.UNet2015`, :class:`~unet_edu.models.AttentionUNet` and
:class:`~unet_edu.models.UNet3D` are the same U built from different parts, so the U is written
once here and each model states only what it changes:

* ``dims`` -- 2 for images, 3 for volumes (``Conv2d``, ``MaxPool2d``, ``ConvTranspose2d`` or
  their 3-D twins);
* ``norm`` -- a factory ``channels -> layer`` (see :func:`~unet_edu.blocks.norm_factory`), or
  ``None``;
* ``padding`` -- ``"same"`` or the paper's ``"valid"``;
* ``gate`` and :meth:`UNetSkeleton.join` -- how an encoder map meets the decoder
  (concatenate, add, or let an attention gate filter it first).

``features`` lists the channel width of each level from the top to the bottleneck, so there are
``len(features) - 1`` 2x max-pools on the way down and as many 2x transposed convolutions on the
way up.  The layers keep the names ``down``, ``pool``, ``bottleneck``, ``up``, ``decode`` and
``head`` that the chapters and saved weights use.
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import DoubleConv
from .checks import check_batch, check_halvings

__all__ = ["UNetSkeleton", "center_crop", "check_features"]

_LAYERS = {  # pool, up-convolution, 1x1 head
    2: (nn.MaxPool2d, nn.ConvTranspose2d, nn.Conv2d),
    3: (nn.MaxPool3d, nn.ConvTranspose3d, nn.Conv3d),
}


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Cut the central ``height x width`` window out of ``x`` (the paper's "copy and crop")."""
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


def check_features(features, model: str) -> tuple[int, ...]:
    """``features`` as a tuple of ints; a U needs at least two levels."""
    features = tuple(int(f) for f in features)
    if len(features) < 2:
        raise ValueError(f"{model} needs at least 2 levels in features, got {features}")
    if min(features) < 1:
        raise ValueError(f"{model}: every level needs at least 1 channel, got features={features}")
    return features


class UNetSkeleton(nn.Module):
    """A U of :class:`~unet_edu.blocks.DoubleConv` blocks joined by skip connections.

    ``skip`` is ``"concat"`` (the decoder block sees ``2 * c`` channels), ``"add"`` or
    ``"none"`` (both ``c``).  ``gate(c, c_low)``, if given, builds one module per decoder step
    into ``self.gates`` (bottom first, like ``self.up``) for :meth:`join` to use.  Subclasses
    change :meth:`join` and :meth:`check_input`.
    """

    def __init__(self, in_channels: int, out_channels: int, features, *, dims: int = 2,
                 padding: str = "same", norm=None, skip: str = "concat", gate=None):
        super().__init__()
        pool, upconv, head = _LAYERS[dims]
        self.in_channels, self.dims, self.skip_mode = in_channels, dims, skip
        self.levels = len(features)
        self.down = nn.ModuleList(
            DoubleConv(c_in, c, padding, norm, dims)
            for c_in, c in zip((in_channels, *features), features[:-1])
        )
        self.pool = pool(2)
        self.bottleneck = DoubleConv(features[-2], features[-1], padding, norm, dims)
        if gate is not None:
            self.gates = nn.ModuleList()  # gate(skip channels, gating channels), as self.up
        self.up = nn.ModuleList()
        self.decode = nn.ModuleList()
        for c_low, c in zip(features[:0:-1], features[-2::-1]):  # from the bottom up
            if gate is not None:
                self.gates.append(gate(c, c_low))
            self.up.append(upconv(c_low, c, 2, stride=2))
            self.decode.append(DoubleConv(2 * c if skip == "concat" else c, c, padding, norm, dims))
        self.head = head(features[0], out_channels, 1)

    def check_input(self, x: torch.Tensor) -> None:
        """Shape and dtype checks before the first layer (metadata only, see ``checks``)."""
        name = type(self).__name__
        check_batch(x, self.in_channels, name, self.dims, self.head.weight.dtype)
        check_halvings(x, self.levels, name, self.dims)

    def join(self, level: int, skip: torch.Tensor, up: torch.Tensor, coarse: torch.Tensor):
        """Merge the encoder map ``skip`` with the upsampled decoder map ``up`` at ``level``.

        ``coarse`` is the decoder map before upsampling: a gate's signal (AttentionUNet).
        """
        return torch.cat([skip, up], dim=1) if self.skip_mode == "concat" else skip + up

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """Segment (or denoise) ``x``; ``t`` is accepted for a common interface and ignored."""
        return self._run(x, None)

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every intermediate map by name, in the order they are computed.

        Names: ``enc{i}`` (encoder level i), ``bottleneck``, ``up{i}`` (after the up-convolution
        into level i), ``skip{i}`` (the encoder map as joined, cropped if needed), ``dec{i}``
        (decoder level i), ``out``.  Level 0 is the top of the U.
        """
        maps: dict[str, torch.Tensor] = {}
        self._run(x, maps)
        return maps

    def _run(self, x: torch.Tensor, maps: dict | None) -> torch.Tensor:
        self.check_input(x)

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
            coarse, h = h, keep(f"up{i}", up(h))
            if self.skip_mode != "none":
                # With valid padding the encoder map is larger than h: crop it (same: a no-op).
                s = keep(f"skip{i}", center_crop(skips[i], h.shape[-2], h.shape[-1]))
                h = self.join(i, s, h, coarse)
            h = keep(f"dec{i}", block(h))
        return keep("out", self.head(h))
