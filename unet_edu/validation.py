"""Input checks that turn shape mistakes into errors a learner can act on.

PyTorch reports a bad input deep inside a layer ("Sizes of tensors must match except in
dimension 1"), far from the cause.  The models call these checks first, so the message names
the problem *and* the fix, e.g. ``height 30 is not divisible by 4 (2^2 for 3 levels); use 28
or 32``.  Every check raises :class:`ValueError` and never modifies its input.
"""

from __future__ import annotations

import torch

__all__ = [
    "nearest_multiples",
    "check_image",
    "check_divisible",
    "check_timesteps",
    "check_groups",
]


def nearest_multiples(n: int, m: int) -> tuple[int, int]:
    """The multiples of ``m`` just below and just above ``n`` (the lower one at least ``m``)."""
    below = max(m, (n // m) * m)
    above = below + m if below <= n else below
    return below, above


def check_image(x: torch.Tensor, in_channels: int, model: str) -> None:
    """``x`` must be a 4-D batch ``(B, C, H, W)`` with ``C == in_channels``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{model} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        hint = " (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else ""
        raise ValueError(
            f"{model} expects a batch of images of shape (B, C, H, W); got shape "
            f"{tuple(x.shape)}{hint}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{model} was built for {in_channels} input channel(s) but got {x.shape[1]}; "
            f"build it with in_channels={x.shape[1]} or convert the images "
            f"(e.g. x.mean(1, keepdim=True) for grayscale)"
        )


def check_divisible(x: torch.Tensor, levels: int, model: str) -> None:
    """Height and width must survive ``levels - 1`` halvings and come back to the same size."""
    m = 2 ** (levels - 1)
    for name, n in (("height", x.shape[-2]), ("width", x.shape[-1])):
        if n % m:
            lo, hi = nearest_multiples(n, m)
            raise ValueError(
                f"{model}: {name} {n} is not divisible by {m} (2^{levels - 1} for {levels} "
                f"levels); use {lo} or {hi}, or pad the image"
            )


def check_timesteps(t, batch: int, num_timesteps: int, model: str) -> torch.Tensor:
    """``t`` must be a number or a 1-D tensor of ``batch`` values in ``[0, num_timesteps)``.

    Returns ``t`` as a 1-D float tensor of length ``batch`` (a scalar is broadcast).
    """
    if t is None:
        raise ValueError(
            f"{model} needs the timestep t (one value per image); build it with "
            f"time_conditioning=False for a model that ignores t"
        )
    t = torch.as_tensor(t)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.dim() != 1 or t.shape[0] != batch:
        raise ValueError(
            f"{model}: t must have shape ({batch},), one timestep per image, got shape "
            f"{tuple(t.shape)}; use t.view(-1) or torch.full(({batch},), step)"
        )
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise ValueError(f"{model}: t contains NaN or infinity")
    lo, hi = t.min().item(), t.max().item()
    if lo < 0 or hi > num_timesteps - 1:
        raise ValueError(
            f"{model}: timesteps must lie in [0, {num_timesteps - 1}] but range from {lo:g} to "
            f"{hi:g}; clamp them or build the model with num_timesteps={int(hi) + 1}"
        )
    return t.float()


def check_groups(channels: int, groups: int, where: str) -> None:
    """GroupNorm needs ``groups`` to divide ``channels``."""
    if channels % groups:
        divisors = [g for g in range(1, channels + 1) if channels % g == 0]
        lower = max(g for g in divisors if g <= groups)
        raise ValueError(
            f"{where}: GroupNorm with {groups} groups cannot split {channels} channels; use "
            f"norm_groups={lower} (divisors of {channels}: {divisors}) or change the channel counts"
        )
