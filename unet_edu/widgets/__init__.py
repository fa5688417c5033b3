"""Interactive explorers that let a learner look inside the networks.

* ``FeatureMapExplorer`` (chapters 1-2): a layer's feature maps for a chosen model and input;
* ``ReceptiveFieldExplorer`` (chapters 3-4): exact and effective receptive field of a pixel;
* ``DenoisingExplorer`` (chapter 5): x_t, predicted x0 and predicted noise along a sampler;
* ``GateExplorer`` (chapter 6): the attention gates of an Attention U-Net on chosen images;
* ``CrossAttentionExplorer`` (chapter 7): where each word of a caption is attended to.

Each explorer precomputes its frames and links its controls in the browser (see
:mod:`unet_edu.widgets.frames`), so it still responds on the static website; in a live kernel
every control also switches its frames through a Python observer, so it works in Jupyter and
Colab (ipywidgets 7.7 and 8) whatever the front end does with browser links.  Controls read out
the quantity they change (t, a pixel's row, a layer's name), pictures of values carry a colour
scale in the book's colours (:mod:`unet_edu.style`), and every explorer checks its inputs
before any work (:mod:`unet_edu.widgets.inputs`): NumPy arrays and 8-bit pictures are
converted, NaN pixels, diverged models and impossible sizes are refused with the fix.  Each
explorer's ``state_bytes()`` says what it adds to a saved page.  The explorers are imported on
first use, so ``import unet_edu.widgets`` stays light.
"""

from importlib import import_module

from .frames import IPYWIDGETS_8, linked_stack, png_image, value_slider

_EXPLORERS = {
    "FeatureMapExplorer": "feature_maps",
    "ReceptiveFieldExplorer": "receptive_field",
    "DenoisingExplorer": "denoising",
    "GateExplorer": "gates",
    "CrossAttentionExplorer": "cross_attention",
}


def __getattr__(name):
    if name in _EXPLORERS:
        return getattr(import_module(f".{_EXPLORERS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["IPYWIDGETS_8", "linked_stack", "png_image", "value_slider", *_EXPLORERS]
