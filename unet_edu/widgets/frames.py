"""Widgets that still respond on the static website, where no Python kernel runs.

The trick: compute every frame a control can show *in advance*, put the frames in an
ipywidgets ``Stack`` (one child visible at a time) and tie the control to the stack's
``selected_index`` with :func:`ipywidgets.jslink`.  The link lives in the browser, so the saved
page switches frames with no kernel at all.  ``Stack`` exists from ipywidgets 8 on; under
ipywidgets 7 (Colab ships 7.7.1) there is always a live kernel, so the fallback swaps the
visible child from Python instead.
"""

from __future__ import annotations

import ipywidgets as W

__all__ = ["IPYWIDGETS_8", "linked_stack", "png_image"]

IPYWIDGETS_8 = int(W.__version__.split(".")[0]) >= 8


def png_image(data: bytes, width: int | None = None) -> W.Image:
    """An ``Image`` widget showing PNG bytes."""
    kwargs = {} if width is None else {"width": width}
    return W.Image(value=data, format="png", **kwargs)


def linked_stack(children, control: W.Widget, trait: str = "value") -> W.Widget:
    """Show ``children[i]`` when ``control.<trait> == i``, in the browser when possible.

    ``control`` is an integer control (``IntSlider``, ``Play``; use ``trait="index"`` for a
    ``Dropdown`` or ``ToggleButtons``).  Returns the widget to display.
    """
    children = list(children)
    if not children:
        raise ValueError("linked_stack needs at least one child")
    start = getattr(control, trait) or 0
    if IPYWIDGETS_8:
        stack = W.Stack(children, selected_index=start)
        stack.links = [W.jslink((control, trait), (stack, "selected_index"))]
        return stack
    box = W.Box([children[start]])

    def show(change):
        box.children = (children[change["new"]],)

    control.observe(show, names=trait)
    return box
