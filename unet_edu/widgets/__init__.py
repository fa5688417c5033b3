"""Interactive explorers that let a learner look inside the networks.

* ``FeatureMapExplorer`` (chapters 1-2): a layer's feature maps for a chosen model and input;
* ``ReceptiveFieldExplorer`` (chapters 3-4): exact and effective receptive field of a pixel;
* ``DenoisingExplorer`` (chapter 5): x_t, predicted x0 and predicted noise along a sampler;
* ``GateExplorer`` (chapter 6): the attention gates of an Attention U-Net on chosen images.

Each explorer precomputes its frames and links its controls in the browser (see
:mod:`unet_edu.widgets.frames`), so it works live in Jupyter and Colab (ipywidgets 7.7 and 8)
and still responds on the static website.  The explorers are imported on first use, so
``import unet_edu.widgets`` stays light.
"""

from importlib import import_module

from .frames import IPYWIDGETS_8, linked_stack, png_image

_EXPLORERS = {
    "FeatureMapExplorer": "feature_maps",
    "ReceptiveFieldExplorer": "receptive_field",
    "DenoisingExplorer": "denoising",
    "GateExplorer": "gates",
}


def __getattr__(name):
    if name in _EXPLORERS:
        return getattr(import_module(f".{_EXPLORERS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["IPYWIDGETS_8", "linked_stack", "png_image", *_EXPLORERS]
