"""Captions that are true of their digits: measured attributes, thresholds and sentences.

A text-to-image model learns what words mean from captioned images, so the captions must be
true.  Here they are *computed*: each digit's stroke thickness, width and slant are measured
from its pixels (the measurements of Morpho-MNIST, Castro et al., 2019, with the simple
estimators below), each measurement is put into a bin by thresholds taken from the training
set's quantiles, and the bins are spelled out in a small vocabulary:

* thickness: ``"thin"`` (thinner than two thirds of the training digits) or ``"thick"``
  (thicker than two thirds); nothing in between;
* width: ``"narrow"`` or ``"wide"``, by the same rule *within the digit's class* (a wide one
  is still narrower than most zeros);
* slant: ``"slanted left"`` (leaning left by more than 5 degrees), ``"upright"`` (within 5
  degrees of vertical) or ``"slanted right"`` (more than 15 degrees, about a third of the
  training digits); the direction of a lean has an absolute zero, so these bins are fixed
  angles rather than quantiles, and between 5 and 15 degrees nothing is said;
* the class word, ``"zero"`` to ``"nine"``.

A caption reads ``[thickness] [width] <class> [slant]``, e.g. ``"thick narrow seven slanted
left"``.  There is no ``"small"`` or ``"large"``: MNIST scales every digit to fit a 20 x 20
box, so 85% of the training digits are exactly 20 pixels tall and a size word would not be
true of them; width is what varies.

The estimators take images ``(N, 1, H, W)`` or ``(N, H, W)`` with ink in [0, 1] (white on
black, as MNIST):

* :func:`stroke_thickness` — ink area over half its perimeter, in pixels (for a stroke of
  width ``w`` and length ``L`` that is ``w L / (L + w)``, close to ``w`` for long strokes);
* :func:`slant` — the shear of the ink's second moments, as an angle in degrees from
  vertical, positive when the top leans right;
* :func:`digit_width` — the horizontal spread of the ink once the slant is taken out,
  ``sqrt(12)`` standard deviations (the width of an evenly inked bar), in pixels.

A blank image has no attributes: the estimators return NaN for it rather than a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

__all__ = ["CLASS_WORDS", "ATTRIBUTE_WORDS", "VOCABULARY", "ATTRIBUTES", "stroke_thickness",
           "slant", "digit_width", "measure", "CaptionThresholds", "fit_thresholds",
           "attribute_bins", "caption", "describe", "training_captions", "parse_caption",
           "Prompt", "prompts_varying", "tokenizer"]

CLASS_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# The words of each attribute's bins, low to high; None: nothing is said about that bin.
ATTRIBUTE_WORDS = {
    "thickness": ("thin", None, "thick"),
    "width": ("narrow", None, "wide"),
    "slant": ("slanted left", "upright", None, "slanted right"),
}
ATTRIBUTES = tuple(ATTRIBUTE_WORDS)
VOCABULARY = CLASS_WORDS + ("thin", "thick", "narrow", "wide", "upright", "slanted", "left",
                            "right")
MAX_TOKENS = 8  # <start>, at most five words, <end>, and one padding position
SLANT_EDGES = (-5.0, 5.0, 15.0)  # degrees: left | upright | (nothing) | right


def tokenizer():
    """The :class:`~unet_edu.text.Tokenizer` of the caption vocabulary (21 tokens, 8 ids)."""
    from .text import Tokenizer

    return Tokenizer(VOCABULARY, MAX_TOKENS)


# --------------------------------------------------------------------------------------------
# Estimators
# --------------------------------------------------------------------------------------------
def _ink(images) -> torch.Tensor:
    """``images`` as a float64 ``(N, H, W)`` tensor of ink in [0, 1], checked."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor (N, 1, H, W), got "
                         f"{type(images).__name__}")
    x = images.detach().cpu()
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 3 or min(x.shape) == 0:
        raise ValueError(f"images must be a non-empty batch (N, 1, H, W) or (N, H, W), got "
                         f"shape {tuple(images.shape)}; add a batch axis with x[None]")
    if not x.is_floating_point():
        raise ValueError(f"images must hold floats in [0, 1], got {x.dtype}; use "
                         f"x.float() / 255 for 8-bit images")
    x = x.double()
    if not torch.isfinite(x).all():
        raise ValueError(f"images contain {int((~torch.isfinite(x)).sum())} NaN or infinite "
                         f"value(s); measure finite images")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"images must hold ink in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
                         f"for diffusion samples in [-1, 1] use ((x + 1) / 2).clamp(0, 1)")
    return x.clamp(0, 1)


def _moments(x: torch.Tensor):
    """Ink mass and the central second moments ``(m, mu_xx, mu_xy, mu_yy)`` per image
    (``y`` is the row, counted downwards)."""
    n, h, w = x.shape
    rows = torch.arange(h, dtype=x.dtype).view(1, h, 1)
    cols = torch.arange(w, dtype=x.dtype).view(1, 1, w)
    m = x.sum((1, 2))
    safe = m.clamp_min(1e-12)
    cy = (x * rows).sum((1, 2)) / safe
    cx = (x * cols).sum((1, 2)) / safe
    dy, dx = rows - cy.view(-1, 1, 1), cols - cx.view(-1, 1, 1)
    mu_xx = (x * dx * dx).sum((1, 2)) / safe
    mu_xy = (x * dx * dy).sum((1, 2)) / safe
    mu_yy = (x * dy * dy).sum((1, 2)) / safe
    return m, mu_xx, mu_xy, mu_yy


def _blank_to_nan(values: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    return torch.where(mass > 1e-6, values, torch.full_like(values, math.nan)).float()


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
                        dtype=torch.float64) / 8


def stroke_thickness(images) -> torch.Tensor:
    """Mean stroke thickness in pixels: ``2 * ink area / perimeter``, one
    value per image.

    The ink area is the sum of the pixel values; the perimeter is the total
    length of the ink's edges, the sum of the gradient magnitude (Sobel, so
    that slanted edges count their length, not their staircase).  A stroke
    of width ``w`` and length ``L`` has area ``w L`` and perimeter ``2 (L +
    w)``, so the ratio is ``w L / (L + w)``; a closed loop (a zero) has no
    ends and gives ``w``.  On straight bars two to four pixels wide, leaning
    up to 20 degrees, the estimate is within 20% of that (the Sobel filter
    is not perfectly isotropic on edges this sharp); it ranks strokes by
    thickness reliably, which is what captions need.
    """
    x = _ink(images)
    padded = F.pad(x[:, None], (1, 1, 1, 1))
    gx = F.conv2d(padded, _SOBEL_X[None, None])
    gy = F.conv2d(padded, _SOBEL_X.T.contiguous()[None, None])
    perimeter = (gx.square() + gy.square()).sqrt().sum((1, 2, 3))
    area = x.sum((1, 2))
    return _blank_to_nan(2 * area / perimeter.clamp_min(1e-12), area)


def slant(images) -> torch.Tensor:
    """Slant in degrees from vertical, positive when the top of the digit
    leans right.

    From the ink's second moments: the shear ``s = -mu_xy / mu_yy`` is how
    far the ink's centre moves right per pixel upwards (the quantity that
    MNIST deskewing removes); the angle is ``atan(s)``.
    """
    x = _ink(images)
    m, _, mu_xy, mu_yy = _moments(x)
    shear = -mu_xy / mu_yy.clamp_min(1e-12)
    return _blank_to_nan(torch.rad2deg(torch.atan(shear)), m)


def digit_width(images) -> torch.Tensor:
    """Width in pixels of the deskewed digit: ``sqrt(12)`` horizontal
    standard deviations.

    The slant is taken out first (the horizontal variance left once the
    shear is removed is ``mu_xx - mu_xy^2 / mu_yy``), so a leaning one is
    not counted as wide.  A bar inked evenly over ``w`` pixels has a
    standard deviation of ``w / sqrt(12)``, hence the factor.  The moments
    place each pixel's ink at the pixel's centre; the ink is spread over the
    pixel, which adds ``1/12`` px^2 of variance (Sheppard's correction), so
    that a bar exactly two pixels wide measures 2.
    """
    x = _ink(images)
    m, mu_xx, mu_xy, mu_yy = _moments(x)
    deskewed = mu_xx - mu_xy.square() / mu_yy.clamp_min(1e-12)
    var = deskewed.clamp_min(0) + 1 / 12
    return _blank_to_nan(torch.sqrt(12 * var), m)


_ESTIMATORS = {"thickness": stroke_thickness, "width": digit_width, "slant": slant}


def measure(images) -> dict[str, torch.Tensor]:
    """``{"thickness": ..., "width": ..., "slant": ...}``: the three estimators on ``images``
    (pixels, pixels, degrees; NaN for blank images)."""
    return {name: fn(images) for name, fn in _ESTIMATORS.items()}


# --------------------------------------------------------------------------------------------
# Thresholds and bins
# --------------------------------------------------------------------------------------------
@dataclass
class CaptionThresholds:
    """Where one word ends and the next begins, per attribute.

    ``thickness``: (thin below, thick above), in pixels.  ``width``: the same per class
    (``{class: (narrow below, wide above)}``).  ``slant``: the degrees between slanted left,
    upright, nothing, slanted right.  :func:`fit_thresholds` computes them from training digits;
    ``to_dict``/``from_dict`` store them with a model.
    """

    thickness: tuple[float, float]
    width: dict[int, tuple[float, float]]
    slant: tuple[float, ...] = field(default=SLANT_EDGES)

    def to_dict(self) -> dict:
        return {"thickness": list(self.thickness),
                "width": {str(c): list(v) for c, v in self.width.items()},
                "slant": list(self.slant)}

    @classmethod
    def from_dict(cls, d: dict) -> "CaptionThresholds":
        return cls(tuple(d["thickness"]), {int(c): tuple(v) for c, v in d["width"].items()},
                   tuple(d["slant"]))


def _check_labels(labels, n: int) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() == 0:
        labels = labels.expand(n)
    if labels.is_floating_point() or labels.shape != (n,):
        raise ValueError(f"labels must be {n} integer classes, one per image, got dtype "
                         f"{labels.dtype} and shape {tuple(labels.shape)}")
    if n and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"labels must be digits 0..9, got {labels.min().item()}.."
                         f"{labels.max().item()}")
    return labels.long()


def fit_thresholds(images, labels, quantiles=(1 / 3, 2 / 3)) -> CaptionThresholds:
    """Thresholds from training digits: the ``quantiles`` of thickness (all digits) and of
    width (per class); slant keeps its fixed angles.  Every class needs a few digits."""
    q = torch.tensor([float(v) for v in quantiles], dtype=torch.float64)
    if len(q) != 2 or not 0 < q[0] < q[1] < 1:
        raise ValueError(f"quantiles must be two fractions 0 < low < high < 1, got "
                         f"{quantiles!r}; (1/3, 2/3) splits the digits into thirds")
    values = measure(images)
    labels = _check_labels(labels, len(values["thickness"]))
    ok = ~values["thickness"].isnan()

    def cut(v):
        return tuple(round(float(a), 4) for a in torch.quantile(v.double(), q))

    missing = [c for c in range(10) if int(((labels == c) & ok).sum()) < 3]
    if missing:
        raise ValueError(f"fit_thresholds needs at least 3 inked digits of every class, but "
                         f"classes {missing} have fewer; pass a larger training set")
    width = {c: cut(values["width"][(labels == c) & ok]) for c in range(10)}
    return CaptionThresholds(cut(values["thickness"][ok]), width)


def attribute_bins(values: dict, labels, thresholds: CaptionThresholds) -> torch.Tensor:
    """Bin index of each attribute, ``(N, 3)`` int64 in the order of :data:`ATTRIBUTES`.

    Bin ``k`` of an attribute is the ``k``-th entry of :data:`ATTRIBUTE_WORDS` (low to high);
    a NaN measurement (a blank image) gets -1, which says nothing.
    """
    n = len(values["thickness"])
    labels = _check_labels(labels, n)
    width_edges = torch.tensor([thresholds.width[int(c)] for c in labels],
                               dtype=torch.float64).reshape(n, 2)
    edges = {"thickness": torch.tensor(thresholds.thickness, dtype=torch.float64).expand(n, 2),
             "width": width_edges,
             "slant": torch.tensor(thresholds.slant, dtype=torch.float64).expand(n, 3)}
    out = []
    for name in ATTRIBUTES:
        v = values[name].double()
        b = (v[:, None] > edges[name]).sum(1)  # number of edges below the value
        out.append(torch.where(v.isnan(), torch.full_like(b, -1), b))
    return torch.stack(out, 1)


def caption(label: int, bins=None, keep=None) -> str:
    """The caption of one digit: ``[thickness] [width] <class> [slant]``.

    ``bins`` is the digit's row of :func:`attribute_bins` (``None``: the class word alone);
    ``keep`` (three booleans) leaves out attributes whose word is not wanted.
    """
    bins = [-1, -1, -1] if bins is None else [int(b) for b in bins]
    keep = [True, True, True] if keep is None else [bool(k) for k in keep]
    words = {}
    for name, b, k in zip(ATTRIBUTES, bins, keep):
        options = ATTRIBUTE_WORDS[name]
        words[name] = options[b] if k and 0 <= b < len(options) else None
    parts = [words["thickness"], words["width"], CLASS_WORDS[int(label)], words["slant"]]
    return " ".join(p for p in parts if p)


def describe(images, labels, thresholds: CaptionThresholds) -> list[str]:
    """The full true caption of every digit (every attribute that has a word)."""
    values = measure(images)
    labels = _check_labels(labels, len(values["thickness"]))
    bins = attribute_bins(values, labels, thresholds)
    return [caption(c, b) for c, b in zip(labels.tolist(), bins.tolist())]


def training_captions(labels, bins, generator=None, p_word: float = 0.7) -> list[str]:
    """Captions for one training batch: each attribute word kept with probability ``p_word``.

    Leaving words out at random teaches the model that ``"seven"`` means a seven of any
    thickness, and that each word adds its own meaning: the prompts of the chapter can then
    vary one attribute at a time.  Every caption stays true of its digit.
    """
    if not 0 <= p_word <= 1:
        raise ValueError(f"p_word is a probability and must lie in [0, 1], got {p_word!r}")
    labels = torch.as_tensor(labels)
    bins = torch.as_tensor(bins)
    keep = torch.rand(len(labels), len(ATTRIBUTES), generator=generator) < p_word
    return [caption(c, b, k) for c, b, k in zip(labels.tolist(), bins.tolist(), keep.tolist())]


def parse_caption(text: str) -> dict:
    """What a caption asks for: ``{"digit": 0-9 or None, "thickness": word or None, ...}``.

    Words may come in any order; ``"slanted"`` must be followed by ``"left"`` or ``"right"``.
    Unknown words, and two words for one attribute, are errors that name them.
    """
    if not isinstance(text, str) or not text.split():
        raise ValueError(f"parse_caption needs a non-empty caption string, got {text!r}")
    words = text.lower().replace(",", " ").split()
    found: dict = {"digit": None, "thickness": None, "width": None, "slant": None}

    def put(key, value):
        if found[key] is not None:
            raise ValueError(f"the caption {text!r} says two things about {key}: "
                             f"{found[key]!r} and {value!r}; keep one")
        found[key] = value

    i = 0
    while i < len(words):
        w = words[i]
        if w in CLASS_WORDS:
            put("digit", CLASS_WORDS.index(w))
        elif w in ("thin", "thick"):
            put("thickness", w)
        elif w in ("narrow", "wide"):
            put("width", w)
        elif w == "upright":
            put("slant", w)
        elif w == "slanted":
            if i + 1 == len(words) or words[i + 1] not in ("left", "right"):
                raise ValueError(f"the caption {text!r} says 'slanted' without a direction; "
                                 f"write 'slanted left' or 'slanted right'")
            put("slant", f"slanted {words[i + 1]}")
            i += 1
        else:
            raise ValueError(f"the caption {text!r} has the word {w!r}, which is not in the "
                             f"vocabulary: {', '.join(VOCABULARY)}")
        i += 1
    return found


@dataclass(frozen=True)
class Prompt:
    """A prompt of an attribute study: its text, the digit, and the word it sets (or None)."""

    text: str
    digit: int
    attribute: str
    word: str | None


def prompts_varying(attribute: str, digit: int, fixed: dict | None = None) -> list[Prompt]:
    """Prompts that differ in one attribute only: no word, then each word of ``attribute``.

    ``fixed`` sets words for other attributes, e.g. ``{"slant": "upright"}``.  For
    ``("thickness", 7)``: ``"seven"``, ``"thin seven"``, ``"thick seven"``.
    """
    if attribute not in ATTRIBUTE_WORDS:
        raise ValueError(f"attribute must be one of {', '.join(ATTRIBUTES)}, got "
                         f"{attribute!r}")
    if isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit <= 9:
        raise ValueError(f"digit must be a class 0..9, got {digit!r}")
    fixed = dict(fixed or {})
    if attribute in fixed:
        raise ValueError(f"fixed sets {attribute!r}, the attribute that varies; drop it from "
                         f"fixed")
    for name, word in fixed.items():
        if name not in ATTRIBUTE_WORDS or word not in ATTRIBUTE_WORDS[name] or word is None:
            words = {a: [w for w in ws if w] for a, ws in ATTRIBUTE_WORDS.items()}
            raise ValueError(f"fixed={fixed!r}: each entry must be an attribute and one of its "
                             f"words, {words}")
    out = []
    for word in (None,) + tuple(w for w in ATTRIBUTE_WORDS[attribute] if w):
        words = {**fixed, attribute: word}
        parts = [words.get("thickness"), words.get("width"), CLASS_WORDS[digit],
                 words.get("slant")]
        out.append(Prompt(" ".join(p for p in parts if p), digit, attribute, word))
    return out
