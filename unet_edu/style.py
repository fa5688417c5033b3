"""One look for every figure of the book: a colour per model family, sizes, colour bars.

A reader compares models across chapters: the naive CNN of chapter 1 comes back in chapter 3,
the U-Net in every chapter.  So each *model family* has one colour everywhere, and the members
of a family (the U-Net without skips, the diffusion U-Net that is not told ``t``) keep the
family's hue with another line style and shade:

==========================  =================  ==========  ===============================
family                      colour             marker      variants (line style)
==========================  =================  ==========  ===============================
naive CNN (and DnCNN)       vermillion         square      DnCNN ``--``
U-Net (2015)                blue               circle      additive skips ``--`` (darker),
                                                           no skips ``:`` (lighter),
                                                           plain cross-entropy ``-.``
diffusion U-Net             bluish green       triangle    not told ``t`` ``--`` (lighter),
                                                           no attention ``:`` (lighter)
Attention U-Net             reddish purple     diamond
U-Net++                     orange             down-tri.
BatchNorm U-Net             sky blue           plus
GroupNorm U-Net             black              cross
latent (text) U-Net         wine               star
autoencoder                 grey               hexagon
==========================  =================  ==========  ===============================

The colours are Okabe and Ito's colour-blind-safe palette (its yellow is too pale for lines on
white and is left out), with Paul Tol's wine for the seventh chapter's latent U-Net and a grey
for its autoencoder.  :func:`model_style` reads a family from a label the way the chapters write
them ("naive CNN, 5 layers", "U-Net, no skips", "told t", "Attention U-Net", experiment variant
names such as ``unet-add``); a label it does not recognise gets the next spare colour, and keeps
it for the rest of the run.  :func:`register` pins a label to a family by hand.

:func:`use` applies the sizes: figures drawn at 96 dots per inch, so that a 7.5-inch figure is
the 720-pixel width of the page's column on a 1280-pixel screen; fonts of 10 to 11.5 points
(13 to 15 pixels there, still 6.5 pixels or more on a 390-pixel phone, where the figure shrinks to
half); constrained layout, which makes room for titles, labels and colour bars so that no text
overlaps; and, in a notebook, PNGs rendered at twice the resolution for high-density screens,
reduced to a 256-colour palette where that costs no visible quality, so that each stays small
(:func:`figure_png`).

Importing :mod:`unet_edu.viz` does **not** call :func:`use`: importing a module should not change
a reader's matplotlib settings behind their back.  Every chapter calls ``style.use()`` once in
its first cell; the colours of :func:`model_style` and :func:`colorbar` work with or without it.

Image-valued maps (feature maps, gate maps, heat maps, probability and error maps) always get a
colour bar, so a reader can read a value off a colour: :func:`colorbar` adds one of the book's
size, and :data:`CMAPS` names the colour map each kind of map uses, in figures and explorers.
"""

from __future__ import annotations

import io
import re
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib as mpl
from cycler import cycler
from matplotlib.colors import to_hex, to_rgb

__all__ = ["OKABE_ITO", "PALETTE", "FAMILIES", "CMAPS", "MARKS", "RC", "COLUMN_INCHES", "DPI",
           "Family", "ModelStyle", "model_style", "color_of", "register", "forget",
           "colorbar", "use", "context", "figure_png", "FULL_COLOUR_LIMIT"]

# Okabe & Ito (2008), "Color Universal Design": eight colours distinguishable with every common
# colour-vision deficiency.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "bluish green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish purple": "#CC79A7",
}

# The colour cycle for lines that belong to no model (yellow is too pale for a line on white).
PALETTE = tuple(OKABE_ITO[c] for c in ("blue", "orange", "bluish green", "vermillion",
                                       "reddish purple", "sky blue", "black"))

# Spare colours (Paul Tol's "muted" scheme, also colour-blind safe) for labels that belong to
# no family, handed out in order of first use.
_SPARE = ("#44AA99", "#999933", "#AA4499", "#332288", "#CC6677", "#DDCC77", "#88CCEE")
_SPARE_STYLES = ("-", "--", ":", "-.")

COLUMN_INCHES = 7.5  # the page's column: 720 CSS pixels on a 1280-pixel screen
DPI = 96             # CSS pixels per inch, so that a figure is shown at its size in inches

# The colour map of each kind of image-valued map, in figures and in the explorers.
CMAPS = {
    "image": "gray",        # pictures: digits, cells
    "map": "viridis",       # feature maps, probability maps, areas
    "heat": "inferno",      # effective receptive fields (gradient magnitude)
    "gate": "magma",        # attention-gate coefficients in [0, 1]
    "error": "magma",       # absolute errors
    "signed": "RdBu_r",     # signed values around 0 (embeddings, differences)
}

# Marks drawn on top of pictures, the same in figures and explorers: the outline of an exact
# receptive field and the output pixel it belongs to (bright, to stand out on grey and on heat).
MARKS = {"field": "#00E6FF", "pixel": "#33FF33"}


@dataclass(frozen=True)
class Family:
    """A model family: its name in the legend, its colour and its marker."""

    key: str
    name: str
    color: str
    marker: str


FAMILIES = {f.key: f for f in [
    Family("naive-cnn", "naive CNN", OKABE_ITO["vermillion"], "s"),
    Family("unet", "U-Net (2015)", OKABE_ITO["blue"], "o"),
    Family("diffusion-unet", "diffusion U-Net", OKABE_ITO["bluish green"], "^"),
    Family("attention-unet", "Attention U-Net", OKABE_ITO["reddish purple"], "D"),
    Family("unet-plus-plus", "U-Net++", OKABE_ITO["orange"], "v"),
    Family("batchnorm", "U-Net with BatchNorm", OKABE_ITO["sky blue"], "P"),
    Family("groupnorm", "U-Net with GroupNorm", OKABE_ITO["black"], "X"),
    Family("latent-unet", "latent, text-conditioned U-Net", "#882255", "*"),
    Family("autoencoder", "autoencoder", "#6E6E6E", "h"),
]}

# Members of a family: (variant, line style, shade).  Shade > 0 mixes in white, < 0 black.
_VARIANTS = {
    ("naive-cnn", "dncnn"): ("--", 0.0),
    ("unet", "add"): ("--", -0.3),
    ("unet", "none"): (":", 0.35),
    ("unet", "plain"): ("-.", 0.0),
    ("diffusion-unet", "blind"): ("--", 0.35),
    ("diffusion-unet", "no attention"): (":", 0.35),
}

# How a label names its family: the first rule whose pattern matches (on the label in lower
# case, with "_" read as "-") wins.  Order matters: "DiffusionUNet, attention" is a diffusion
# U-Net, "cross-attention U-Net" a latent one, "U-Net++" is not the plain U-Net.
_FAMILY_RULES = [
    ("latent-unet", r"latent|\btext|cross-attention|stable diffusion"),
    ("autoencoder", r"auto-?encoder|\bvae\b"),
    ("diffusion-unet", r"diffusion|ddpm|ddim|noise predictor|\btold\b|\bblind\b"),
    ("unet-plus-plus", r"\+\+|plus-plus|plusplus|nested"),
    ("attention-unet", r"attention"),
    ("batchnorm", r"batch-?norm|^batch$|\bbn\b"),
    ("groupnorm", r"group-?norm|^group$|\bgn\b"),
    ("naive-cnn", r"naive|dncnn|plain stack|\bcnn\b"),
    ("unet", r"u-?net|concat|\badd\b|additive|\bnone\b|skip"),
]
_VARIANT_RULES = {
    "naive-cnn": [("dncnn", r"dncnn")],
    "unet": [("none", r"\bnone\b|no skip|without skip|skip=none|hourglass"),
             ("add", r"\badd\b|additive|\bsum\b"),
             ("plain", r"plain")],
    "diffusion-unet": [("blind", r"not told|\bblind\b|without t\b|no t\b"),
                       ("no attention", r"no attention|without attention")],
}

_PINNED: dict[str, "ModelStyle"] = {}
_SPARE_USED: dict[str, "ModelStyle"] = {}


@dataclass(frozen=True)
class ModelStyle:
    """How one model is drawn: ``color``, ``linestyle`` and ``marker``, and why.

    ``family`` is a key of :data:`FAMILIES` (``"other"`` for an unrecognised label) and
    ``variant`` the member of the family (``""`` for the family's main model).  ``kw`` gives
    ``plot`` keyword arguments, ``marker_kw`` those of ``errorbar`` or ``scatter`` markers.
    """

    label: str
    family: str
    variant: str
    color: str
    linestyle: str
    marker: str

    @property
    def kw(self) -> dict:
        """``color`` and ``linestyle`` for ``ax.plot(..., **style.kw)``."""
        return {"color": self.color, "linestyle": self.linestyle}

    @property
    def marker_kw(self) -> dict:
        """``color`` and ``marker`` for markers (``ax.errorbar(..., fmt="none")`` aside)."""
        return {"color": self.color, "marker": self.marker}


def _shade(color: str, amount: float) -> str:
    """``color`` mixed with white (``amount`` > 0) or black (< 0) by ``|amount|``."""
    r, g, b = to_rgb(color)
    if amount >= 0:
        return to_hex(tuple(c + (1 - c) * amount for c in (r, g, b)))
    return to_hex(tuple(c * (1 + amount) for c in (r, g, b)))


def _normalise(label: str) -> str:
    return re.sub(r"\s+", " ", str(label).strip().lower().replace("_", "-"))


def _family_style(label: str, family: str, variant: str = "") -> ModelStyle:
    fam = FAMILIES[family]
    linestyle, shade = _VARIANTS.get((family, variant), ("-", 0.0))
    return ModelStyle(label, family, variant, _shade(fam.color, shade) if shade else fam.color,
                      linestyle, fam.marker)


def model_style(label) -> ModelStyle:
    """The colour, line style and marker of the model called ``label``, the same in every plot.

    ``label`` is a legend label ("naive CNN, 5 layers x 32", "U-Net without skips", "told t"),
    an experiment's variant name (``"unet-none"``) or a class name (``"UNet2015"``); see the
    module's table for the families.  A label of no family gets a spare colour the first time
    it is asked for and the same one afterwards (until :func:`forget`).
    """
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"model_style needs a model's name, got {label!r}: pass the label you "
                         f"give the legend, e.g. 'U-Net (2015)' or 'naive CNN'")
    key = _normalise(label)
    if key in _PINNED:
        return _PINNED[key]
    for family, pattern in _FAMILY_RULES:
        if re.search(pattern, key):
            variant = next((v for v, p in _VARIANT_RULES.get(family, []) if re.search(p, key)), "")
            return _family_style(label, family, variant)
    if key not in _SPARE_USED:
        k = len(_SPARE_USED)
        _SPARE_USED[key] = ModelStyle(label, "other", "", _SPARE[k % len(_SPARE)],
                                      _SPARE_STYLES[k // len(_SPARE) % len(_SPARE_STYLES)], "o")
    return _SPARE_USED[key]


def color_of(label) -> str:
    """The colour of the model called ``label`` (:func:`model_style`)."""
    return model_style(label).color


def register(label: str, family: str, variant: str = "") -> ModelStyle:
    """Draw ``label`` as the ``variant`` of ``family`` from now on (a key of :data:`FAMILIES`).

    For a model whose name says nothing about its family, e.g.
    ``register("my network", "unet")``.  Returns its style.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    known = {v for (f, v) in _VARIANTS if f == family} | {""}
    if variant not in known:
        raise ValueError(f"the {family} family has the variants {sorted(known)}, got "
                         f"{variant!r}; use one of them ('' is the family's main model)")
    style = _family_style(label, family, variant)
    _PINNED[_normalise(label)] = style
    return style


def forget() -> None:
    """Drop every :func:`register` pin and every spare colour handed out so far."""
    _PINNED.clear()
    _SPARE_USED.clear()


def colorbar(mappable, ax=None, label: str | None = None, **kwargs):
    """A colour bar beside ``ax`` (default: the axes of ``mappable``), as tall as the map.

    ``mappable`` is what ``imshow`` (or ``pcolormesh``, ``contourf``) returned; ``ax`` may be a
    list of axes that share the bar.  ``label`` names the quantity and its unit.  Returns the
    :class:`matplotlib.colorbar.Colorbar` (also reachable as ``mappable.colorbar``).
    """
    ax = mappable.axes if ax is None else ax
    axes = ax if isinstance(ax, (list, tuple)) else [ax]
    fig = axes[0].figure
    options = {"fraction": 0.046, "pad": 0.03, **kwargs}
    bar = fig.colorbar(mappable, ax=ax, **options)
    bar.ax.tick_params(labelsize=mpl.rcParams["ytick.labelsize"])
    if label:
        bar.set_label(label)
    return bar


# The book's matplotlib settings (``use`` applies them, ``context`` for a block of code).
RC = {
    "figure.dpi": DPI,
    "savefig.dpi": 2 * DPI,
    "figure.figsize": (COLUMN_INCHES, 3.2),
    "figure.constrained_layout.use": True,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "font.size": 11,
    "axes.titlesize": 11.5,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.title_fontsize": 10,
    "figure.titlesize": 12,
    "axes.prop_cycle": cycler(color=PALETTE),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.6,
    "legend.frameon": False,
    "image.cmap": CMAPS["map"],
}


FULL_COLOUR_LIMIT = 250_000  # bytes: a figure with pictures stays in full colour up to this


def figure_png(fig, scale: float = 2.0, colors: int | str | None = "auto") -> tuple[bytes, dict]:
    """``fig`` as a PNG for high-density screens, and the width to show it at.

    The PNG has ``scale`` times as many pixels per side as the figure has CSS pixels (its size
    in inches times ``figure.dpi``); the returned metadata ``{"width": ...}`` tells the notebook
    (and the book's pages) to show it at the figure's size, so it is sharp on a screen with two
    device pixels per CSS pixel.  Only the width is given: a height would stop the picture from
    shrinking in proportion on a narrow screen.

    ``colors`` keeps the file small.  A number reduces the picture to a palette of that many
    colours (no dithering): a plot of lines has few colours, and its file shrinks to about a
    third.  A smooth colour map, though, shows bands in 256 colours, so ``"auto"`` (the
    default) reduces a figure with pictures (``imshow``, ``pcolormesh``) only when it would
    otherwise exceed :data:`FULL_COLOUR_LIMIT` bytes, and a figure of lines always.  A figure
    that has 256 colours or fewer to begin with (grey-scale digits, say) loses nothing in a
    palette, so ``"auto"`` always stores it as one.  ``None`` keeps full colour.
    """
    from matplotlib.collections import QuadMesh
    from matplotlib.image import AxesImage
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi * scale, bbox_inches="tight",
                facecolor=fig.get_facecolor())
    data = buf.getvalue()
    pic = Image.open(io.BytesIO(data))
    width = round(pic.size[0] / scale)
    if colors == "auto":
        pictures = any(fig.findobj(lambda a: isinstance(a, (AxesImage, QuadMesh))))
        few = pic.convert("RGB").getcolors(256) is not None  # a palette is then lossless
        colors = 256 if not pictures or few or len(data) > FULL_COLOUR_LIMIT else None
    if colors:
        pic = pic.convert("RGB").quantize(colors=int(colors), method=Image.Quantize.MEDIANCUT,
                                          dither=Image.Dither.NONE)
        buf = io.BytesIO()
        pic.save(buf, format="png", optimize=True)
        data = buf.getvalue()
    return data, {"width": width}


def _show_sharp(shell) -> bool:
    """Make ``shell`` display figures with :func:`figure_png`; False outside IPython."""
    if shell is None or not hasattr(shell, "display_formatter"):
        return False
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    # Load the backend now: the inline backend sets the notebook's figure formatters when it
    # is loaded (matplotlib loads it at the first figure), which would undo ours.
    plt.switch_backend(mpl.get_backend())

    png = shell.display_formatter.formatters["image/png"]
    png.for_type(Figure, figure_png)
    return True


def use(sharp: bool = True) -> None:
    """Apply the book's figure style: :data:`RC`, and sharp, small PNGs in a notebook.

    Call it once, before drawing (a chapter's first cell): in a notebook it loads matplotlib's
    backend, which closes figures still open.  ``sharp=False`` keeps the notebook's own PNG
    output (one pixel per CSS pixel) and leaves the backend alone.
    """
    mpl.rcParams.update(RC)
    if sharp:
        try:
            from IPython import get_ipython
        except ImportError:
            return
        _show_sharp(get_ipython())


@contextmanager
def context():
    """``with style.context():`` -- the book's settings inside the block only."""
    with mpl.rc_context(RC):
        yield
