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

In a live kernel every control *also* drives its stack from Python (an observer on the
control): the browser link serves the static page, the observer serves any front end whose
links fail (Colab's widget manager has broken ``jslink`` before), so a control works whatever
the front end does.

Controls say what they change: :func:`value_slider` is a slider over the values themselves
(t = 999 ... 0, a noise level, a layer's name), never over a frame number.  Colour scales of
the pictures are drawn in HTML (:func:`colorbar_html`), with the colour maps of
:mod:`unet_edu.style`, so an explorer and a figure of the same map look the same.
"""

from __future__ import annotations

import io
import json
from functools import lru_cache

import ipywidgets as W
import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

__all__ = ["IPYWIDGETS_8", "linked_stack", "png_image", "compact_png", "frame_style", "frame_image",
           "html_style", "value_slider", "colorbar_html", "text_width", "text_lines",
           "lines_height", "caption_html", "state_bytes"]

IPYWIDGETS_8 = int(W.__version__.split(".")[0]) >= 8


def png_image(data: bytes, width: int | None = None, layout: W.Layout | None = None) -> W.Image:
    """An ``Image`` widget showing PNG bytes (``layout`` may be shared by many images)."""
    kwargs = {} if width is None else {"width": width}
    if layout is not None:
        kwargs["layout"] = layout
    return W.Image(value=data, format="png", **kwargs)


def compact_png(img, value_range=(0.0, 1.0), cmap: str | None = None, levels: int = 256,
                nan_color: str | None = None) -> bytes:
    """A single-channel ``(H, W)`` picture as a small PNG at its own resolution.

    Without ``cmap`` the PNG is greyscale; with a matplotlib colormap name (``"viridis"``) it
    is a palette PNG, one byte per pixel like grey, so colour costs nothing extra.  ``levels``
    below 256 (16, say) quantises the values: noise, which does not compress, then takes about
    half the bytes, at a loss the eye barely sees.  NaN pixels are drawn as the lowest value,
    or, with ``nan_color`` (e.g. ``"white"``, for the gaps of a grid), in that colour: one more
    palette entry (``levels`` must then be below 256).
    """
    if not 2 <= levels <= (255 if nan_color else 256):
        raise ValueError(f"levels must lie in 2..{255 if nan_color else 256}, got {levels}")
    img = torch.as_tensor(img).detach().float().cpu()
    while img.dim() > 2 and img.shape[0] == 1:  # (1, H, W) or (1, 1, H, W); a 1x1 stays 2-D
        img = img[0]
    if img.dim() != 2:
        raise ValueError(f"compact_png draws one channel (H, W), got shape {tuple(img.shape)}")
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must go up, got {value_range}: give (low, high) with "
                         f"high > low, e.g. (0.0, 1.0)")
    holes = torch.isnan(img)
    unit = ((img - lo) / (hi - lo)).clamp(0, 1).nan_to_num(0.0)  # NaN pixels drawn as low
    q = torch.round(unit * (levels - 1))  # quantisation level of each pixel, 0 .. levels - 1
    if nan_color is not None:
        q[holes] = levels  # the extra palette entry
    if cmap is None and levels == 256 and nan_color is None:
        pic = Image.fromarray(q.to(torch.uint8).numpy(), mode="L")
    else:
        # A palette PNG: level k is drawn with the colour (or grey) of k / (levels - 1).
        ramp = np.linspace(0.0, 1.0, levels)
        rgb = (colormaps[cmap](ramp)[:, :3] if cmap else np.repeat(ramp[:, None], 3, 1)) * 255
        if nan_color is not None:
            from matplotlib.colors import to_rgb

            rgb = np.vstack([rgb, np.array(to_rgb(nan_color)) * 255])
        pic = Image.fromarray(q.to(torch.uint8).numpy(), mode="P")
        pic.putpalette(np.round(rgb).astype(np.uint8).ravel().tolist())
    buf = io.BytesIO()
    # Pack 2 or 4 levels' worth of bits per pixel where that suffices.
    entries = levels + (nan_color is not None)
    bits = {"bits": 2} if entries <= 4 else {"bits": 4} if entries <= 16 else {}
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
        # The same switch from Python, for a kernel whose front end drops the browser link.
        _follow(control, trait, len(children), lambda i: setattr(stack, "selected_index", i))
        return stack
    box = W.Box([children[start]], **kwargs)
    _follow(control, trait, len(children), lambda i: setattr(box, "children", (children[i],)))
    return box


def _follow(control: W.Widget, trait: str, n: int, show) -> None:
    """Call ``show(i)`` whenever ``control.<trait>`` becomes a valid index ``i`` (of ``n``)."""

    def on_change(change):
        i = change["new"]
        if isinstance(i, int) and 0 <= i < n:
            show(i)

    control.observe(on_change, names=trait)


def value_slider(description: str, labels, index: int = 0, layout: W.Layout | None = None,
                 description_width: str | None = None) -> W.SelectionSlider:
    """A slider over the values a control really changes, read out as they are.

    ``labels`` are the values as the reader should see them (``["999", "949", ...]`` for a
    timestep, ``["0.1", "0.5", "1"]`` for a noise level); link the slider with
    ``trait="index"``.  Every label must be different, or the read-out would not say which
    position is shown.  ``description_width`` (e.g. ``"7em"``) makes room for a long
    description, which is otherwise cut to the default width.
    """
    labels = [str(label) for label in labels]
    if not labels:
        raise ValueError(f"value_slider {description!r} needs at least one value")
    if len(set(labels)) != len(labels):
        twice = sorted({label for label in labels if labels.count(label) > 1})
        raise ValueError(f"value_slider {description!r}: the labels {twice} occur more than "
                         f"once; give every position its own label")
    if not 0 <= index < len(labels):
        raise ValueError(f"index must lie in 0..{len(labels) - 1}, got {index}")
    style = {} if description_width is None else {"style": {"description_width":
                                                             description_width}}
    return W.SelectionSlider(options=[(label, i) for i, label in enumerate(labels)], index=index,
                             description=description, continuous_update=True,
                             layout=layout or W.Layout(width="100%", max_width="420px"), **style)


def colorbar_html(cmap: str, low: float, high: float, label: str = "",
                  max_width: int | None = None, ends: tuple[str, str] | None = None) -> str:
    """A colour scale in HTML: a strip of the colour map ``cmap`` (a name or a matplotlib
    colour map) from ``low`` to ``high``.

    The numbers at the ends (or the words ``ends``, e.g. ``("lowest", "highest")``) and
    ``label`` (the quantity) sit under the strip.  It costs a few hundred bytes, not a
    picture, and shrinks with the column like the frames.
    """
    from matplotlib.colors import to_hex

    if not high > low:
        raise ValueError(f"a colour scale must go up, got {low} .. {high}")
    colours = colormaps[cmap] if isinstance(cmap, str) else cmap
    stops = ", ".join(to_hex(colours(k / 8)) for k in range(9))
    width = f"max-width: {max_width}px; " if max_width else ""
    left, right = ends if ends else (_number(low), _number(high))
    return (f'<div style="{width}width: 100%; font-size: 0.85em; line-height: 1.3">'
            f'<div style="height: 0.7em; border: 1px solid #888; '
            f'background: linear-gradient(to right, {stops})"></div>'
            f'<div style="display: flex; justify-content: space-between; gap: 0.5em">'
            f"<span>{left}</span><span>{label}</span><span>{right}</span>"
            f"</div></div>")


def _number(v: float) -> str:
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


@lru_cache(maxsize=4)
def _font(px: int):
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), px)


def text_width(text: str, font_px: int = 14) -> float:
    """Width in pixels of ``text`` in a sans-serif font of ``font_px`` pixels (DejaVu Sans,
    wider than the fonts browsers use: an estimate on the safe side)."""
    return _font(font_px).getlength(text)


def text_lines(html: str, width_px: float, font_px: int = 14) -> int:
    """How many lines ``html`` (its text, tags removed) takes in a box ``width_px`` wide."""
    import re

    text = re.sub(r"<br\s*/?>", "\n", html)
    text = re.sub(r"<[^>]+>", "", text).replace("&nbsp;", " ")
    for entity, char in (("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">")):
        text = text.replace(entity, char)
    lines = 0
    for paragraph in text.split("\n"):
        line, count = "", 1
        for word in paragraph.split():
            trial = f"{line} {word}".strip()
            if line and text_width(trial, font_px) > width_px:
                count, line = count + 1, word
            else:
                line = trial
        lines += count
    return lines


LINE_EM = 1.45  # line height of captions, in em (an HTML widget's own is a fixed 28 px)


def lines_height(texts, width_px: float = 330, font_px: int = 14, line_em: float = LINE_EM) -> str:
    """A CSS height that holds the longest of ``texts`` in a box ``width_px`` wide.

    Give every caption of a stack this height, and its text :func:`caption_html`'s line
    height: switching captions then never moves what lies below, on a phone (``width_px``
    about 330) or a wide screen.
    """
    most = max((text_lines(t, width_px, font_px) for t in texts), default=1)
    return f"{most * line_em + 0.3:.2f}em"


def caption_html(text: str, line_em: float = LINE_EM) -> str:
    """``text`` with the line height that :func:`lines_height` counts on."""
    return f'<div style="line-height: {line_em}">{text}</div>'


def state_bytes(widget: W.Widget) -> int:
    """Bytes the widget (and everything it shows) adds to a saved notebook or book page:
    the length of its widget state as JSON, pictures included (base64)."""
    from ipywidgets.embed import dependency_state, embed_data

    state = embed_data(views=[widget], state=dependency_state([widget]))["manager_state"]
    return len(json.dumps(state))
