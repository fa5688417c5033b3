"""A U-Net that reads a caption: a text encoder and a DiffusionUNet trained as one network.

``eps_theta(z_t, t, caption)``: the caption's token ids go through a
:class:`~unet_edu.text.TextEncoder` and the U-Net cross-attends to the resulting vectors at
its attention levels (Rombach et al., 2022, sec. 3.3).  Keeping both in one module makes one
checkpoint, one optimizer and one EMA for the pair, as in the latent diffusion paper's
text-to-image model, whose text transformer learnt together with its U-Net.
"""

from __future__ import annotations

import torch
from torch import nn

from .checks import check_batch
from .config import RecordsConfig
from .diffusion_unet import DiffusionUNet

__all__ = ["TextConditionedUNet"]


class TextConditionedUNet(RecordsConfig, nn.Module):
    """Text encoder + :class:`DiffusionUNet` whose ``context_dim`` is the encoder's width.

    The text encoder's arguments come first: ``vocab_size`` and ``max_length`` (the
    tokenizer's), ``text_width`` (the width of each token's vector, and so of the context the
    U-Net reads), ``text_layers`` and ``text_heads``.  The keyword-only arguments after them are
    the U-Net's, as for :class:`DiffusionUNet` (defaults: the book's latent U-Net, widths 32/32
    on an 8 x 8 latent, a transformer block with cross-attention at both levels and in the
    middle).  The config is one flat record of all of them, so a checkpoint rebuilds the pair.

    ``forward(z_t, t, tokens)`` predicts the noise; :meth:`encode_text` and
    ``self.unet(z_t, t, context=...)`` do the same in two steps, which a sampler uses to encode
    the caption once instead of at every step.
    """

    def __init__(self, vocab_size: int, max_length: int = 8, text_width: int = 32,
                 text_layers: int = 2, text_heads: int = 4, *, in_channels: int = 4,
                 out_channels: int = 4, base_channels: int = 16, channel_mult=(2, 2),
                 num_res_blocks: int = 1, attention_levels=(0, 1), num_heads: int = 4,
                 transformer_depth=1, dropout: float = 0.0, norm_groups: int = 8,
                 time_mode: str = "scale_shift", num_timesteps: int = 1000,
                 linear_projection: bool | None = None, head_channels: int | None = None):
        # Imported here: unet_edu.text builds on this package's config, and importing it at the
        # top would make the two packages wait for each other.
        from ..text import TextEncoder

        super().__init__()
        self.text_encoder = TextEncoder(vocab_size, max_length, text_width, text_layers,
                                        text_heads)
        self.unet = DiffusionUNet(
            in_channels=in_channels, out_channels=out_channels, base_channels=base_channels,
            channel_mult=channel_mult, num_res_blocks=num_res_blocks,
            attention_levels=attention_levels, num_heads=num_heads, dropout=dropout,
            context_dim=text_width, norm_groups=norm_groups, time_mode=time_mode,
            num_timesteps=num_timesteps, transformer_depth=transformer_depth,
            linear_projection=linear_projection, head_channels=head_channels)

    @property
    def num_timesteps(self) -> int:
        return self.unet.config["num_timesteps"]

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, L)`` -> the context ``(B, L, text_width)`` the U-Net cross-attends
        to."""
        return self.text_encoder(tokens)

    def forward(self, x: torch.Tensor, t, tokens: torch.Tensor) -> torch.Tensor:
        # The latents first: a missing batch axis would otherwise be reported as bad tokens.
        check_batch(x, self.unet.config["in_channels"], "TextConditionedUNet", 2,
                    self.unet.conv_in.weight.dtype)
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[0] != len(x):
            got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"TextConditionedUNet: tokens must be one row of ids per latent, "
                             f"shape ({len(x)}, L), got {got}; use the caption tokenizer's "
                             f"encode(captions)")
        return self.unet(x, t, context=self.encode_text(tokens.to(x.device)))
