"""What the benchmark compares: matched model configurations, the peers, the run variants.

Every model is built as an ``nn.Module`` called ``model(x, t)`` that returns the predicted noise
-- the call :func:`unet_edu.diffusion.ddim_sample` makes -- so the measurements differ only in
the network.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass

import torch
from torch import nn

from unet_edu.models import DiffusionUNet

__all__ = ["CONFIGS", "PEERS", "LABELS", "CLASS_NAMES", "OURS", "Variant", "EAGER", "CUDA_VARIANTS",
           "cpu_variants", "peer_available", "version", "build"]

# ----------------------------------------------------------------------------------------------
# Matched configurations.  "ours" uses time_mode="add" (the timestep is added, as diffusers
# does by default): with it the two models have the same layout and exactly the same number of
# parameters.  denoising-diffusion-pytorch has its own layout (linear attention at the higher
# levels, full attention at the lowest); its width ``dim`` is chosen to match the count.
CONFIGS: dict[str, dict] = {
    "mnist28": dict(
        title="28x28 digits, ~1.7M parameters (the Hugging Face diffusion course's MNIST U-Net)",
        image=(1, 28, 28),
        batch={"cpu": 64, "cuda": 256},
        cpu_sampling=(16, 5),  # images, DDIM steps timed on the CPU (then scaled to 64 x 50)
        ours=dict(in_channels=1, out_channels=1, base_channels=32, channel_mult=(1, 2, 2),
                  num_res_blocks=2, attention_levels=(1, 2), time_mode="add"),
        diffusers=dict(sample_size=28, in_channels=1, out_channels=1, layers_per_block=2,
                       block_out_channels=(32, 64, 64),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
        lucidrains=dict(dim=36, dim_mults=(1, 2, 2), channels=1),
        # diffusers' attention heads are 8 channels wide: 8 heads at 64 channels, where ours
        # defaults to 4.  Same parameters, different cost: this row measures the difference.
        ours_heads8=dict(in_channels=1, out_channels=1, base_channels=32, channel_mult=(1, 2, 2),
                         num_res_blocks=2, attention_levels=(1, 2), time_mode="add", num_heads=8),
    ),
    "rgb32": dict(
        title="32x32 RGB, ~18.5M parameters (4 levels, attention at the two lowest)",
        image=(3, 32, 32),
        batch={"cpu": 16, "cuda": 128},
        cpu_sampling=(8, 5),
        ours=dict(in_channels=3, out_channels=3, base_channels=64, channel_mult=(1, 2, 2, 4),
                  num_res_blocks=2, attention_levels=(2, 3), time_mode="add"),
        diffusers=dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                       block_out_channels=(64, 128, 128, 256),
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D",
                                         "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D")),
        lucidrains=dict(dim=80, dim_mults=(1, 2, 2, 4), channels=3),
    ),
    "tiny": dict(
        title="8x8 digits, ~177k parameters (for tests only)",
        image=(1, 8, 8),
        batch={"cpu": 4, "cuda": 4},
        cpu_sampling=(4, 2),
        ours=dict(in_channels=1, out_channels=1, base_channels=16, channel_mult=(1, 2),
                  num_res_blocks=1, attention_levels=(1,), norm_groups=8, time_mode="add"),
        diffusers=dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(16, 32), norm_num_groups=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D")),
        lucidrains=dict(dim=16, dim_mults=(1, 2), channels=1, attn_heads=1, attn_dim_head=8),
    ),
}

# name -> (python module, distribution on PyPI, how the network is called)
PEERS = {
    "diffusers": ("diffusers", "diffusers"),
    "lucidrains": ("denoising_diffusion_pytorch", "denoising-diffusion-pytorch"),
}
LABELS = {"ours": "unet_edu DiffusionUNet", "diffusers": "diffusers UNet2DModel",
          "lucidrains": "denoising-diffusion-pytorch Unet",
          "ours_heads8": "unet_edu DiffusionUNet, 8 heads"}
CLASS_NAMES = {"ours": "DiffusionUNet", "ours_heads8": "DiffusionUNet", "diffusers": "UNet2DModel",
               "lucidrains": "Unet"}
OURS = ("ours", "ours_heads8")  # ours_heads8 runs only where a configuration defines it


def peer_available(name: str) -> bool:
    """True when the peer's package can be imported."""
    return importlib.util.find_spec(PEERS[name][0]) is not None


def version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class _PeerAdapter(nn.Module):
    """A peer's network with our call, ``model(x, t) -> predicted noise``."""

    def __init__(self, net: nn.Module, returns_tuple: bool = False):
        super().__init__()
        self.net = net
        self.returns_tuple = returns_tuple

    def forward(self, x, t):
        if self.returns_tuple:  # diffusers returns a tuple (or an output object)
            return self.net(x, t, return_dict=False)[0]
        return self.net(x, t)


def build(name: str, config: str) -> nn.Module:
    """Build model ``name`` ("ours", "diffusers", "lucidrains") at configuration ``config``.

    Every model is returned as an ``nn.Module`` called as ``model(x, t)`` and returning the
    predicted noise, the call :func:`unet_edu.diffusion.ddim_sample` makes.
    """
    kwargs = CONFIGS[config][name]
    if name in OURS:
        return DiffusionUNet(**kwargs)
    if name == "diffusers":
        from diffusers import UNet2DModel

        return _PeerAdapter(UNet2DModel(**kwargs), returns_tuple=True)
    if name == "lucidrains":
        from denoising_diffusion_pytorch import Unet

        return _PeerAdapter(Unet(**kwargs))
    raise ValueError(f"unknown model {name!r}; known: ours, {', '.join(PEERS)}")


# ----------------------------------------------------------------------------------------------
# Variants: the same network run in other precisions, layouts or compiled.
@dataclass(frozen=True)
class Variant:
    name: str
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False


EAGER = Variant("fp32")
CUDA_VARIANTS = (EAGER, Variant("bf16", bf16=True), Variant("bf16+channels_last", True, True),
                 Variant("bf16+compile", True, False, True))


def cpu_variants() -> tuple[Variant, ...]:
    """float32, plus bf16 autocast where the CPU computes in bf16 natively (AVX-512 BF16, AMX).

    channels-last and ``torch.compile`` are left out on the CPU: measured on the 2-core machine
    of the appendix they made a training step slower (0.94x and 0.96x), and compiling took
    about two minutes.  Without native bf16 the CPU emulates it, which is slower than float32.
    """
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return (EAGER, Variant("bf16", bf16=True))
    return (EAGER,)
