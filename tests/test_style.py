"""The book's figure style: one colour per model family, the sizes, colour bars on every map."""

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from unet_edu import style  # noqa: E402
from unet_edu.train import History  # noqa: E402
from unet_edu.viz import (LiveLossPlot, figure_to_png, plot_history, rf_overlay,  # noqa: E402
                          show_images, show_map)


@pytest.fixture(autouse=True)
def _clean():
    style.forget()
    yield
    style.forget()
    plt.close("all")


# -- colours -----------------------------------------------------------------------------------
# The labels the chapters write, and the family each one belongs to.
CHAPTER_LABELS = {
    "naive CNN, 5 layers x 32": "naive-cnn",
    "naive-cnn": "naive-cnn",
    "naive CNN, 5 layers x 32 (trained)": "naive-cnn",
    "U-Net, 3 levels": "unet",
    "U-Net (2015)": "unet",
    "UNet2015": "unet",
    "U-Net 2015, 3 levels": "unet",
    "same U-Net without skips": "unet",
    "unet-add": "unet",
    "skip=none (seed 0)": "unet",
    "concat, plain CE": "unet",
    "told t": "diffusion-unet",
    "not told t": "diffusion-unet",
    "DiffusionUNet, attention": "diffusion-unet",
    "Attention U-Net": "attention-unet",
    "attention-unet": "attention-unet",
    "U-Net++": "unet-plus-plus",
    "unet-plus-plus": "unet-plus-plus",
    "U-Net++ pruned to depth d": "unet-plus-plus",
    "batch": "batchnorm",
    "BatchNorm": "batchnorm",
    "group": "groupnorm",
    "GroupNorm U-Net": "groupnorm",
    "latent U-Net": "latent-unet",
    "text-conditioned U-Net": "latent-unet",
    "autoencoder": "autoencoder",
}


@pytest.mark.parametrize("label, family", CHAPTER_LABELS.items())
def test_a_chapter_label_names_its_family(label, family):
    assert style.model_style(label).family == family


def test_the_same_label_gets_the_same_colour_in_every_call():
    for label in list(CHAPTER_LABELS) + ["my own network", "another one"]:
        first, second = style.model_style(label), style.model_style(label)
        assert first == second
    assert style.color_of("naive CNN") == style.color_of("naive-cnn, seed 2")


def test_families_differ_and_variants_keep_the_hue():
    main = {f: style.model_style(f).color for f in ("naive CNN", "U-Net", "told t",
                                                     "Attention U-Net", "U-Net++", "BatchNorm",
                                                     "GroupNorm", "latent U-Net", "autoencoder")}
    assert len(set(main.values())) == len(main)
    unet, add, none = (style.model_style(x) for x in ("U-Net", "U-Net, add skips",
                                                      "U-Net without skips"))
    assert {unet.linestyle, add.linestyle, none.linestyle} == {"-", "--", ":"}
    for variant in (add, none):  # the same hue: blue dominates, only lightness changes
        r, g, b = matplotlib.colors.to_rgb(variant.color)
        assert b > r and b > g and variant.family == "unet"
    told, blind = style.model_style("told t"), style.model_style("not told t")
    assert told.family == blind.family and told.linestyle != blind.linestyle


def test_the_palette_is_okabe_ito_without_the_pale_yellow():
    assert set(style.PALETTE) <= set(style.OKABE_ITO.values())
    assert style.OKABE_ITO["yellow"] not in style.PALETTE
    assert all(f.color in style.OKABE_ITO.values() or f.key in ("latent-unet", "autoencoder")
               for f in style.FAMILIES.values())


def test_unknown_labels_get_spare_colours_in_order_and_register_pins_a_family():
    a, b = style.model_style("first unknown"), style.model_style("second unknown")
    assert a.family == b.family == "other" and a.color != b.color
    assert a.color not in {f.color for f in style.FAMILIES.values()}
    pinned = style.register("my network", "unet", "none")
    assert style.model_style("my network") == pinned and pinned.linestyle == ":"
    with pytest.raises(ValueError, match="family must be one of"):
        style.register("x", "transformer")
    with pytest.raises(ValueError, match="variants"):
        style.register("x", "unet", "dense")
    with pytest.raises(ValueError, match="model's name"):
        style.model_style("")


# -- settings and PNGs -------------------------------------------------------------------------
def test_use_sets_the_sizes_and_context_restores_them():
    before = dict(matplotlib.rcParams)
    with style.context():
        assert matplotlib.rcParams["figure.dpi"] == 96
        assert matplotlib.rcParams["figure.constrained_layout.use"]
        assert matplotlib.rcParams["font.size"] >= 10
        assert min(matplotlib.rcParams[k] for k in ("xtick.labelsize", "ytick.labelsize",
                                                    "legend.fontsize")) >= 10
        colours = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
        assert colours == list(style.PALETTE)
    assert matplotlib.rcParams["figure.dpi"] == before["figure.dpi"]
    try:
        style.use(sharp=False)
        assert matplotlib.rcParams["figure.dpi"] == 96
    finally:
        matplotlib.rcParams.update(before)


def test_sharp_pngs_have_twice_the_pixels_a_width_only_and_few_bytes():
    with style.context():
        fig, ax = plt.subplots(figsize=(7.5, 3))
        rng = np.random.default_rng(0)
        for k in range(4):
            ax.plot(np.cumsum(rng.normal(size=2000)), label=f"run {k}")
        ax.legend()
        data, meta = style.figure_png(fig)
        full, _ = style.figure_png(fig, colors=None)
    width, _ = Image.open(io.BytesIO(data)).size
    assert set(meta) == {"width"}  # no height: the picture shrinks in proportion on a phone
    assert abs(width - 2 * meta["width"]) <= 2 and 650 <= meta["width"] <= 740
    assert Image.open(io.BytesIO(data)).mode == "P"  # a 256-colour palette
    assert len(data) < 0.6 * len(full), (len(data), len(full))


def test_use_registers_the_sharp_png_formatter_in_ipython():
    from IPython.core.interactiveshell import InteractiveShell
    from matplotlib.figure import Figure

    shell = InteractiveShell.instance()
    before = dict(matplotlib.rcParams)
    try:
        assert style._show_sharp(shell)
        fig = Figure(figsize=(3, 2))
        fig.add_subplot().plot([0, 1])
        data, meta = shell.display_formatter.formatters["image/png"](fig)
        assert data.startswith(b"\x89PNG") and set(meta) == {"width"}
        assert style._show_sharp(None) is False
    finally:
        matplotlib.rcParams.update(before)
        shell.display_formatter.formatters["image/png"].pop(Figure, None)
        InteractiveShell.clear_instance()


def test_a_small_figure_with_a_colour_map_keeps_full_colour_a_large_one_does_not():
    with style.context():
        fig, ax = plt.subplots(figsize=(4, 2))
        shown = ax.imshow(np.linspace(0, 1, 100)[None].repeat(20, 0), cmap="viridis")
        style.colorbar(shown)
        smooth, _ = style.figure_png(fig)
        assert Image.open(io.BytesIO(smooth)).mode in ("RGB", "RGBA")  # no bands in the bar
        fig, axes = plt.subplots(2, 5, figsize=(8, 3.6))
        rng = np.random.default_rng(0)
        for a in axes.flat:
            a.imshow(rng.random((96, 96)), cmap="viridis")
        noisy, _ = style.figure_png(fig)
        full, _ = style.figure_png(fig, colors=None)
        assert Image.open(io.BytesIO(noisy)).mode == "P" and len(noisy) < len(full) / 2


def test_a_grey_figure_becomes_a_palette_without_losing_a_pixel():
    with style.context():
        fig, axes = plt.subplots(1, 4, figsize=(6, 1.8))
        rng = np.random.default_rng(0)
        for a in axes:
            a.imshow(rng.random((28, 28)), cmap="gray", interpolation="nearest")
            a.set_title("grey", fontsize=9)
        small, _ = style.figure_png(fig)
        full, _ = style.figure_png(fig, colors=None)
    assert len(full) < style.FULL_COLOUR_LIMIT  # "auto" chose the palette for its colours
    palette, rgb = Image.open(io.BytesIO(small)), Image.open(io.BytesIO(full))
    assert palette.mode == "P" and len(small) < len(full)
    assert np.array_equal(np.asarray(palette.convert("RGB")), np.asarray(rgb.convert("RGB")))


def test_figure_to_png_uses_a_palette():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 0])
    png = figure_to_png(fig)
    assert Image.open(io.BytesIO(png)).mode == "P"


# -- colour bars on every map -----------------------------------------------------------------
def _has_colorbar(ax) -> bool:
    return any(getattr(im, "colorbar", None) is not None for im in ax.images)


def test_map_functions_put_a_colour_bar_on_the_map():
    ax = show_map(torch.rand(8, 8), kind="error", label="|error|")
    assert _has_colorbar(ax) and ax.images[0].colorbar.ax.get_ylabel() == "|error|"
    assert ax.images[0].get_cmap().name == style.CMAPS["error"]
    signed = show_map(torch.randn(8, 8), kind="signed")
    lo, hi = signed.images[0].get_clim()
    assert lo == -hi  # centred on 0
    heat = rf_overlay(torch.rand(16, 16), torch.rand(16, 16) > 0.5, torch.rand(16, 16), (8, 8))
    assert heat.images[1].colorbar is not None
    assert heat.images[1].get_cmap().name == style.CMAPS["heat"]
    assert _has_colorbar(show_images(torch.rand(4, 1, 8, 8), cmap="magma", value_range=(0, 1)))
    # pictures (grey digits) are photographs, not maps: no bar unless asked for
    assert not _has_colorbar(show_images(torch.rand(4, 1, 8, 8)))
    assert _has_colorbar(show_images(torch.rand(4, 1, 8, 8), colorbar=True))
    with pytest.raises(ValueError, match="kind must be one of"):
        show_map(torch.rand(4, 4), kind="rainbow")


def test_show_images_keeps_true_values_for_the_colour_bar():
    ax = show_images(torch.full((2, 1, 4, 4), 0.25), value_range=(0, 1), colorbar=True)
    grid = ax.images[0].get_array()
    assert ax.images[0].get_clim() == (0, 1)
    assert np.nanmax(grid) == pytest.approx(0.25)  # not stretched to [0, 1]
    assert np.isnan(np.asarray(grid.filled(np.nan))).any()  # the gaps, drawn white


def test_viz_refuses_nan_pictures_and_accepts_numpy():
    bad = torch.rand(2, 1, 4, 4)
    bad[1, 0, 2, 2] = float("inf")
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        show_images(bad)
    with pytest.raises(ValueError, match="value_range must go up"):
        show_images(torch.rand(1, 1, 4, 4), value_range=(1, 1))
    assert show_images(np.random.default_rng(0).random((3, 1, 4, 4))).images


# -- loss curves -------------------------------------------------------------------------------
def _history(seed: int) -> History:
    g = torch.Generator().manual_seed(seed)
    return History(list(range(50)), (torch.rand(50, generator=g) + 1).tolist())


def test_plot_history_colours_by_model_and_lists_each_model_once():
    fig, ax = plt.subplots()
    models = {"naive CNN, 5 layers x 32": "naive-cnn", "U-Net, 3 levels": "unet"}
    for name in models:
        for seed in range(3):  # the chapters' loop: the label on the first seed only
            plot_history(_history(seed), ax=ax, window=5, label=name if seed == 0 else None)
    smooth = [line for line in ax.get_lines() if line.get_alpha() is None]
    assert len(smooth) == 6
    colours = [line.get_color() for line in smooth]
    assert colours[:3] == [style.color_of("naive CNN")] * 3
    assert colours[3:] == [style.color_of("U-Net")] * 3
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == list(models)
    fig, ax = plt.subplots()
    for seed in range(3):  # or the label on every seed: still one legend entry
        plot_history(_history(seed), ax=ax, window=5, label="told t")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["told t"]
    with pytest.raises(ValueError, match="one loss per step"):
        plot_history(History([], []))


def test_live_loss_plot_records_outside_a_notebook():
    live = LiveLossPlot(every=2, total=4, model="U-Net")
    for step in range(1, 5):
        live(step, 1.0 / step)
    assert live.history.losses == [1.0, 0.5, pytest.approx(1 / 3), 0.25]
    with pytest.raises(ValueError, match="every"):
        LiveLossPlot(every=0)


def test_in_a_kernel_figures_come_out_sharp_and_only_their_width_is_fixed():
    """The whole path: ``style.use()`` in a notebook's first cell, figures drawn later (when
    matplotlib loads the inline backend, which sets its own formatters)."""
    import base64
    import os

    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from unet_edu import style\nstyle.use()"),
                nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\n"
                                          "fig, ax = plt.subplots(figsize=(7.5, 3))\n"
                                          "ax.plot([1, 3, 2])\nplt.show()")]
    # A kernel as a notebook server starts it (the tests' MPLBACKEND=Agg would draw nothing).
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    NotebookClient(nb, timeout=180, kernel_name="python3").execute(env=env)
    (out,) = [o for o in nb.cells[1].outputs if "image/png" in o.get("data", {})]
    picture = Image.open(io.BytesIO(base64.b64decode(out["data"]["image/png"])))
    width = out["metadata"]["image/png"]["width"]
    assert set(out["metadata"]["image/png"]) == {"width"}
    assert abs(picture.size[0] - 2 * width) <= 2 and 650 <= width <= 740
