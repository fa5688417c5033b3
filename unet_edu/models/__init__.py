"""The networks of the book, from the naive baseline to the diffusion U-Net.

Every model keeps the arguments it was built with in ``model.config`` (a JSON-friendly dict,
recorded by :class:`~unet_edu.models.config.RecordsConfig`), so a checkpoint can record them and
:func:`build_model` can rebuild the same network.  UNet2015, AttentionUNet and UNet3D share one
U (:class:`~unet_edu.models.skeleton.UNetSkeleton`).  :class:`TextConditionedUNet` joins a text
encoder to a DiffusionUNet, and :mod:`unet_edu.models.stable_diffusion` builds Stable
Diffusion's U-Nets as DiffusionUNet configurations.  Every model checks its input with
:mod:`unet_edu.models.checks` before the first layer.
"""

from .diffusion_unet import DiffusionUNet
from .naive import DnCNN, NaiveCNN
from .unet2015 import UNet2015, center_crop
from .text_conditioned import TextConditionedUNet
from .variants import AttentionUNet, UNet3D, UNetPlusPlus

MODELS = {"NaiveCNN": NaiveCNN, "DnCNN": DnCNN, "UNet2015": UNet2015, "DiffusionUNet": DiffusionUNet}
MODELS.update(AttentionUNet=AttentionUNet, UNetPlusPlus=UNetPlusPlus, UNet3D=UNet3D)
MODELS.update(TextConditionedUNet=TextConditionedUNet)


def build_model(name: str, config: dict):
    """Rebuild a model from its class name and ``config`` (as stored in a checkpoint)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    return MODELS[name](**config)


def count_parameters(model) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["NaiveCNN", "DnCNN", "UNet2015", "DiffusionUNet", "center_crop", "MODELS", "build_model",
           "count_parameters"]
__all__ += ["AttentionUNet", "UNetPlusPlus", "UNet3D"]
__all__ += ["TextConditionedUNet"]
