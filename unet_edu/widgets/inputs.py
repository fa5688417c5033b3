"""What the explorers accept, checked before any work is done.

An explorer computes all its frames when it is built.  A bad input found half-way ends in an
error from deep inside PyTorch or PIL, far from its cause; one not found at all (a NaN pixel, a
model whose training diverged) gives a page of blank pictures that looks like a result.  So
every explorer runs these checks first, and each error names the offending value and the fix.

Accepted and converted (the explorers' documented behaviour):

* NumPy arrays become tensors;
* 8-bit pictures (``uint8``, 0 to 255) become floats in [0, 1] (divided by 255), and ``bool``
  masks become 0 and 1 -- the book's models all take pictures in [0, 1];
* pictures on the GPU are copied to the CPU (the explorers keep their frames there).

Refused, with the value and the fix:

* other integer or complex dtypes (their scale is unknown);
* NaN or infinite pixels (how many, and the first image and pixel that has one);
* a model with NaN or infinite weights or buffers (which tensor, how many values);
* a channel count other than the model's ``in_channels``;
* a picture size the model cannot take (with the nearest sizes it can).
"""

from __future__ import annotations

from itertools import chain

import numpy as np
import torch
from torch import nn

__all__ = ["as_pictures", "check_finite", "check_model_finite", "accepts_side", "nearest_sides",
           "check_fits", "in_channels"]


def as_pictures(x, name: str, where: str, dims: int) -> torch.Tensor:
    """``x`` as a float CPU tensor with ``dims`` axes, converted as the module docstring says.

    ``dims`` is 4 for a batch ``(N, C, H, W)`` and 3 for one picture ``(C, H, W)`` (a 2-D
    ``(H, W)`` picture is then given its channel axis).  Values are checked for NaN and infinity.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{where}: {name} must be a torch.Tensor or a NumPy array, got "
                         f"{type(x).__name__}")
    x = x.detach().cpu()
    if x.dtype == torch.uint8:
        x = x.float() / 255.0  # 8-bit pictures: 0..255 -> [0, 1]
    elif x.dtype == torch.bool:
        x = x.float()
    elif not x.is_floating_point() or x.is_complex():
        raise ValueError(f"{where}: {name} has dtype {x.dtype}, whose scale is unknown; pass "
                         f"floats (e.g. {name}.float() / 255 for 0..255 values, or "
                         f"{name}.float() if they already lie in [0, 1])")
    x = x.float()
    if dims == 3 and x.dim() == 2:
        x = x[None]
    if x.dim() != dims:
        layout = "a batch (N, C, H, W)" if dims == 4 else "one picture (C, H, W) or (H, W)"
        hint = ""
        if dims == 4 and x.dim() == 3:
            hint = f"; for one picture use {name}[None], for (N, H, W) use {name}[:, None]"
        elif dims == 3 and x.dim() == 4:
            hint = f"; pass one picture of the batch, e.g. {name}[0]"
        raise ValueError(f"{where}: {name} must be {layout}, got shape {tuple(x.shape)}{hint}")
    if x.numel() == 0:
        raise ValueError(f"{where}: {name} is empty (shape {tuple(x.shape)}): pass at least one "
                         f"picture, e.g. x_test[:3]")
    check_finite(x, name, where)
    return x


def check_finite(x: torch.Tensor, name: str, where: str) -> None:
    """NaN or infinite values in ``x`` are an error naming how many and the first one."""
    bad = ~torch.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{where}: {name} holds {int(bad.sum())} NaN or infinite value(s), the "
                         f"first at index {first}; clean them first (e.g. "
                         f"torch.nan_to_num({name})) or drop those pictures")


def check_model_finite(model: nn.Module, name: str, where: str) -> None:
    """A model whose weights or buffers hold NaN or infinity is an error naming the tensor."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"{where}: model {name!r} must be a torch.nn.Module, got "
                         f"{type(model).__name__}")
    for tensor_name, t in chain(model.named_parameters(), model.named_buffers()):
        if t.is_meta or not t.is_floating_point():
            continue
        bad = ~torch.isfinite(t.detach())
        if bad.any():
            raise ValueError(
                f"{where}: model {name!r} has {int(bad.sum())} NaN or infinite value(s) of "
                f"{t.numel()} in {tensor_name}: its training diverged or its checkpoint is "
                f"damaged; load a good checkpoint, or retrain it (a lower learning rate often "
                f"helps)")


def in_channels(model: nn.Module) -> int | None:
    """The number of input channels the model was built for (``None`` if it does not say)."""
    config = getattr(model, "config", None) or {}
    return config.get("in_channels")


def _levels(model: nn.Module) -> int | None:
    config = getattr(model, "config", None) or {}
    if "channel_mult" in config:
        return len(config["channel_mult"])
    if "features" in config:
        return len(config["features"])
    return getattr(model, "levels", None)


def accepts_side(model: nn.Module, n: int) -> bool:
    """Can ``model`` take pictures whose side is ``n`` pixels?"""
    if n < 1:
        return False
    output_size = getattr(model, "output_size", None)
    if callable(output_size):  # UNet2015: "valid" padding trims, "same" needs halvings
        return output_size(n) is not None
    levels = _levels(model)
    if levels is None:  # a plain stack of convolutions: any size
        return True
    return n % 2 ** (levels - 1) == 0


def nearest_sides(model: nn.Module, n: int) -> tuple[int | None, int]:
    """The sides next below (``None`` if none) and next above ``n`` that ``model`` takes."""
    below = next((m for m in range(n - 1, 0, -1) if accepts_side(model, m)), None)
    above = next(m for m in range(n + 1, n + 4097) if accepts_side(model, m))
    return below, above


def check_fits(model: nn.Module, shape, name: str, where: str, what: str = "images") -> None:
    """``model`` must take pictures of ``shape`` (``(..., C, H, W)``): channels and sides.

    ``what`` names the pictures in the message: a plural (``"images"``) for a batch, a
    singular (``"image"``) for one picture, whose fix then has no batch axis.
    """
    c, h, w = (int(s) for s in shape[-3:])
    want = in_channels(model)
    if want is not None and c != want:
        if what.endswith("s"):  # a batch (N, C, H, W)
            fix = (f"{what}.mean(1, keepdim=True)" if want == 1 else
                   f"{what}.repeat(1, {want}, 1, 1)" if c == 1 else f"{what}[:, :{want}]")
        else:  # one picture (C, H, W)
            fix = (f"{what}.mean(0, keepdim=True)" if want == 1 else
                   f"{what}.repeat({want}, 1, 1)" if c == 1 else f"{what}[:{want}]")
        verb, them = ("have", "them") if what.endswith("s") else ("has", "it")
        raise ValueError(f"{where}: model {name!r} takes {want} channel(s) but the {what} "
                         f"{verb} {c}; convert {them} (e.g. {fix}) or pass a model built with "
                         f"in_channels={c}")
    for side_name, n in (("height", h), ("width", w)):
        if not accepts_side(model, n):
            below, above = nearest_sides(model, n)
            sizes = f"{below} or {above}" if below else f"{above}"
            raise ValueError(f"{where}: model {name!r} ({type(model).__name__}) cannot take "
                             f"{what} of {side_name} {n} (they are {h} x {w}); use a side of "
                             f"{sizes} (pad or crop the {what})")
