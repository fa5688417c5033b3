"""The checks every model runs on its input before the first layer.

They look only at metadata (type, shape, dtype), never at values: reading a value from a GPU
tensor (``.item()``, ``if tensor:``) makes the CPU wait for the device on every forward pass and
breaks ``torch.compile``.  Value checks (NaN pixels, label ranges) belong at the API boundary
(losses, samplers, ``fit``), which runs them once.  Every check raises :class:`ValueError`
with the fix and never modifies its input.
"""

from __future__ import annotations

import torch

from ..validation import nearest_multiples

__all__ = ["check_batch", "check_halvings"]

_AXES = {2: ("height", "width"), 3: ("depth", "height", "width")}
_LAYOUT = {2: ("image", "(B, C, H, W)"), 3: ("volume", "(B, C, D, H, W)")}


def check_batch(x, in_channels: int, model: str, dims: int = 2, weight_dtype=None) -> None:
    """``x`` must be a non-empty floating batch ``(B, C, ...)`` of ``dims`` spatial axes."""
    item, layout = _LAYOUT[dims]
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{model} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != dims + 2:
        hint = ""
        if x.dim() == dims + 1:
            hint = f" (one {item} without a batch axis? use x.unsqueeze(0))"
        raise ValueError(
            f"{model} expects a batch of {item}s of shape {layout}; got shape "
            f"{tuple(x.shape)}{hint}"
        )
    if x.shape[0] == 0:
        raise ValueError(
            f"{model} got an empty batch (shape {tuple(x.shape)}); pass at least one {item}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{model} was built for {in_channels} input channel(s) but got {x.shape[1]}; build it "
            f"with in_channels={x.shape[1]} or convert the {item}s (e.g. x.mean(1, keepdim=True) "
            f"for grayscale)"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"{model} expects floating-point pixels, got {x.dtype}; use x.float() (and x.float() / "
            f"255 for 8-bit images)"
        )
    # Under autocast the layers cast their inputs themselves, so any float dtype is fine there.
    if weight_dtype is not None and x.dtype != weight_dtype and not torch.is_autocast_enabled(
            x.device.type):
        raise ValueError(
            f"{model} has {weight_dtype} weights but got a {x.dtype} input; use "
            f"x.to({weight_dtype}) or convert the model with model.to({x.dtype})"
        )


def check_halvings(x: torch.Tensor, levels: int, model: str, dims: int = 2) -> None:
    """Every spatial side must survive ``levels - 1`` halvings and come back to the same size."""
    m = 2 ** (levels - 1)
    for name, n in zip(_AXES[dims], x.shape[2:]):
        if n % m:
            lo, hi = nearest_multiples(n, m)
            raise ValueError(
                f"{model}: {name} {n} is not divisible by {m} (2^{levels - 1} for {levels} "
                f"levels); use {lo} or {hi}, or pad the {_LAYOUT[dims][0]}"
            )
