"""Chapter 4 — telling the network the time.  Checkers for the exercises.

Each checker computes the right answer with the package (never a stored number), compares it
with yours, and prints a verdict (it returns None).
"""

from __future__ import annotations

import math

from . import verdict
from ..blocks import ResBlock, SinusoidalTimeEmbedding
from ..diffusion import NoiseSchedule
from ..models import count_parameters

__all__ = ["slowest_period", "snr_crossing", "check_slowest_period", "check_snr_crossing", "check_time_params"]


def slowest_period(dim: int, max_period: float = 10000.0) -> float:
    """Period, in timesteps, of the slowest sine of :class:`SinusoidalTimeEmbedding`."""
    return 2 * math.pi / float(SinusoidalTimeEmbedding(dim, max_period).freqs.min())


def snr_crossing(kind: str, num_steps: int = 1000) -> int:
    """The first (0-based) timestep at which the signal-to-noise ratio drops below 1."""
    snr = NoiseSchedule(kind, num_steps).snr()
    return int((snr < 1).nonzero()[0])


def check_slowest_period(dim: int, answer: float) -> None:
    """Your period (in steps) of the slowest channel pair of a ``dim``-dimensional embedding."""
    right = slowest_period(dim)
    ok = abs(float(answer) - right) <= 0.01 * right
    verdict(ok, f"the slowest pair turns once every {right:,.0f} steps.",
            "the slowest frequency is 10000 ** (-(dim/2 - 1) / (dim/2)); a sine of "
            "frequency w repeats every 2*pi / w steps.")


def check_snr_crossing(kind: str, answer: int) -> None:
    """Your first timestep where the ``kind`` schedule's SNR falls below 1 (within 1 step)."""
    right = snr_crossing(kind)
    verdict(abs(int(answer) - right) <= 1, f"SNR < 1 from t = {right} on ({kind} schedule).",
            "SNR = alpha_bar / (1 - alpha_bar) < 1 exactly when alpha_bar < 1/2: look at "
            "NoiseSchedule(kind).alphas_cumprod.")


def check_time_params(out_channels: int, emb_dim: int, mode: str, answer: int) -> None:
    """Your number of parameters that turn the embedding into this block's ``mode`` conditioning
    (``"scale_shift"`` or ``"add"``) for a ResBlock with ``out_channels`` channels."""
    block = ResBlock(out_channels, out_channels, emb_dim, norm_groups=1, time_mode=mode)
    right = count_parameters(block.emb_proj)
    verdict(int(answer) == right, f"{right:,} parameters in the block's embedding projection.",
            "a Linear layer from a to b features has a*b weights and b biases; scale-shift "
            "needs two numbers per channel (gamma and beta), addition one.")
