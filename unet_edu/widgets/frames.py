"""Widgets that still respond on the static website, where no Python kernel runs.

The trick: compute every frame a control can show *in advance*, put the frames in an
ipywidgets ``Stack`` (one child visible at a time) and tie the control to the stack's
``selected_index`` with :func:`ipywidgets.jslink`.  The link lives in the browser, so the saved
page switches frames with no kernel at all.  ``Stack`` exists from ipywidgets 8 on; under
ipywidgets 7 (Colab ships 7.7.1) there is always a live kernel, so the fallback swaps the
visible child from Python instead.  A ``jslink`` ties one trait to one trait, so a view that
depends on several controls is a tree of stacks, one level per control.

Every frame travels inside the page, so frames are kept small: pictures are stored at their
own resolution (a 28x28 digit is 28x28 pixels, grey or with a 256-colour palette) and the
browser enlarges them without smoothing (CSS ``image-rendering: pixelated``).  Each picture
sits in a box of fixed shape (:func:`frame_style`), so the layout does not jump when a
control switches frames, and the box shrinks with the column on a phone.
"""

from __future__ import annotations

import io

import ipywidgets as W
import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

__all__ = ["IPYWIDGETS_8", "linked_stack", "png_image", "compact_png", "frame_style", "frame_image",
           "html_style"]

IPYWIDGETS_8 = int(W.__version__.split(".")[0]) >= 8


def png_image(data: bytes, width: int | None = None, layout: W.Layout | None = None) -> W.Image:
    """An ``Image`` widget showing PNG bytes (``layout`` may be shared by many images)."""
    kwargs = {} if width is None else {"width": width}
    if layout is not None:
        kwargs["layout"] = layout
    return W.Image(value=data, format="png", **kwargs)


def compact_png(img, value_range=(0.0, 1.0), cmap: str | None = None, levels: int = 256) -> bytes:
    """A single-channel ``(H, W)`` picture as a small PNG at its own resolution.

    Without ``cmap`` the PNG is greyscale; with a matplotlib colormap name (``"viridis"``) it
    is a palette PNG, one byte per pixel like grey, so colour costs nothing extra.  ``levels``
    below 256 (16, say) quantises the values: noise, which does not compress, then takes about
    half the bytes, at a loss the eye barely sees.
    """
    if not 2 <= levels <= 256:
        raise ValueError(f"levels must lie in 2..256, got {levels}")
    img = torch.as_tensor(img).detach().float().cpu().squeeze()
    if img.dim() != 2:
        raise ValueError(f"compact_png draws one channel (H, W), got shape {tuple(img.shape)}")
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must go up, got {value_range}: give (low, high) with "
                         f"high > low, e.g. (0.0, 1.0)")
    unit = ((img - lo) / (hi - lo)).clamp(0, 1).nan_to_num(0.0)  # NaN pixels drawn as low
    q = torch.round(unit * (levels - 1))  # quantisation level of each pixel, 0 .. levels - 1
    if cmap is None and levels == 256:
        pic = Image.fromarray(q.to(torch.uint8).numpy(), mode="L")
    else:
        # A palette PNG: level k is drawn with the colour (or grey) of k / (levels - 1).
        ramp = np.linspace(0.0, 1.0, levels)
        rgb = (colormaps[cmap](ramp)[:, :3] if cmap else np.repeat(ramp[:, None], 3, 1)) * 255
        pic = Image.fromarray(q.to(torch.uint8).numpy(), mode="P")
        pic.putpalette(np.round(rgb).astype(np.uint8).ravel().tolist())
    buf = io.BytesIO()
    # Pack 2 or 4 levels' worth of bits per pixel where that suffices.
    bits = {"bits": 2} if levels <= 4 else {"bits": 4} if levels <= 16 else {}
    pic.save(buf, format="png", optimize=True, **bits)
    return buf.getvalue()


def frame_style(css_class: str, width: int, height: int, pixelated: bool = True) -> W.HTML:
    """A ``<style>`` for pictures and stacks of class ``css_class``: a fixed box.

    The box is ``width`` CSS pixels wide at most (less in a narrow column) with the aspect ratio
    ``width : height``; pictures fill it without distortion (``object-fit: contain``) and, with
    ``pixelated``, are enlarged without smoothing.  Put the returned widget next to the frames.
    """
    smooth = "image-rendering: pixelated;" if pixelated else ""
    css = (f".{css_class} {{ width: 100% !important; max-width: {width}px !important; "
           f"height: auto !important; aspect-ratio: {width} / {height}; flex: 0 0 auto; "
           f"object-fit: contain; margin: 0; {smooth} }}")
    return W.HTML(f"<style>{css}</style>", layout=W.Layout(height="0px", margin="0px"))


def frame_image(data: bytes, css_class: str, layout: W.Layout | None = None) -> W.Image:
    """An ``Image`` of PNG bytes drawn in the fixed box of :func:`frame_style`."""
    image = png_image(data, layout=layout)
    image.add_class(css_class)
    return image


def html_style() -> W.Widget:
    """A style for many ``HTML`` widgets to share (one model in the saved page, not one each)."""
    return W.HTML.class_traits()["style"].klass()


def linked_stack(children, control: W.Widget, trait: str = "value",
                 layout: W.Layout | None = None) -> W.Widget:
    """Show ``children[i]`` when ``control.<trait> == i``, in the browser when possible.

    ``control`` is an integer control (``IntSlider``, ``Play``; use ``trait="index"`` for a
    ``Dropdown``, ``ToggleButtons`` or ``SelectionSlider``).  ``layout`` may be shared by many
    stacks (it keeps the saved page small).  Returns the widget to display.
    """
    children = list(children)
    if not children:
        raise ValueError("linked_stack needs at least one child")
    start = getattr(control, trait) or 0
    if not 0 <= start < len(children):
        raise ValueError(f"the control's {trait} is {start}, but there are {len(children)} "
                         f"children: give the control one value per child")
    kwargs = {} if layout is None else {"layout": layout}
    if IPYWIDGETS_8:
        stack = W.Stack(children, selected_index=start, **kwargs)
        stack.links = [W.jslink((control, trait), (stack, "selected_index"))]
        return stack
    box = W.Box([children[start]], **kwargs)

    def show(change):
        box.children = (children[change["new"]],)

    control.observe(show, names=trait)
    return box
