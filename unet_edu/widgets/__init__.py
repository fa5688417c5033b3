"""Interactive explorers that let a learner look inside the networks.

Each explorer precomputes its frames and links its controls in the browser (see
:mod:`unet_edu.widgets.frames`), so it works live in Jupyter and Colab (ipywidgets 7.7 and 8)
and still responds on the static website.
"""

from .frames import IPYWIDGETS_8, linked_stack, png_image

__all__ = ["IPYWIDGETS_8", "linked_stack", "png_image"]
