"""The architecture diagrams read the network's structure from a forward pass: check what they
extract (levels, channels, sizes, skips) against the models' own configuration."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from unet_edu.diagrams import receptive_field_diagram, trace_unet, unet_diagram  # noqa: E402
from unet_edu.exercises.chapter3 import unet_deepest_path  # noqa: E402
from unet_edu.models import DiffusionUNet, UNet2015  # noqa: E402
from unet_edu.receptive_field import layer_table  # noqa: E402


@pytest.mark.parametrize("features", [(4, 8), (8, 16, 32), (4, 8, 16, 32, 64)])
def test_unet2015_levels_channels_and_skips(features):
    net = UNet2015(features=features, padding="same")
    trace = trace_unet(net, (1, 32, 32))
    assert trace.depth == len(features)
    assert [lv.down_channels for lv in trace.levels] == list(features)
    assert [lv.up_channels for lv in trace.levels[:-1]] == list(features[:-1])
    assert trace.levels[-1].up_channels is None  # the bottleneck has no decoder half
    sizes = [(32 >> i, 32 >> i) for i in range(len(features))]
    assert [lv.down_size for lv in trace.levels] == sizes
    skips = sorted(trace.skips, key=lambda s: s.level)
    assert [(s.level, s.channels, s.mode) for s in skips] == [
        (i, c, "concat") for i, c in enumerate(features[:-1])]
    assert all(s.size == s.joined_size for s in skips)  # "same" padding: nothing is cropped
    assert trace.output_shape == (1, 2, 32, 32)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_the_paper_network_crops_its_skips(device):
    net = UNet2015(features=(1, 2, 3, 4, 5), padding="valid").to(device)
    trace = trace_unet(net, (1, 572, 572))  # on "meta": shapes only, no arithmetic
    assert trace.output_shape[-2:] == (388, 388)
    crops = {s.level: (s.size, s.joined_size) for s in trace.skips}
    assert crops[0] == ((568, 568), (392, 392))  # the paper's figure: 568 cropped to 392
    assert crops[3] == ((64, 64), (56, 56))


@pytest.mark.parametrize("skip, mode", [("add", "add"), ("none", None)])
def test_unet2015_skip_modes(skip, mode):
    trace = trace_unet(UNet2015(features=(4, 8, 16), skip=skip), (1, 16, 16))
    assert [s.mode for s in trace.skips] == ([mode] * 2 if mode else [])


@pytest.mark.parametrize("config", [
    dict(),
    dict(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, norm_groups=8),
    dict(base_channels=8, channel_mult=(1, 2, 4, 4), num_res_blocks=3, attention_levels=(2, 3),
         norm_groups=4, num_classes=10),
])
def test_diffusion_unet_levels_channels_and_skips(config):
    net = DiffusionUNet(**config)
    cfg = net.config
    levels, blocks = len(cfg["channel_mult"]), cfg["num_res_blocks"]
    side = 4 * 2 ** (levels - 1)
    trace = trace_unet(net, (1, side, side))
    widths = [cfg["base_channels"] * m for m in cfg["channel_mult"]]
    assert trace.depth == levels
    assert [lv.down_channels for lv in trace.levels] == widths
    assert [lv.up_channels for lv in trace.levels] == widths
    assert [lv.down_size for lv in trace.levels] == [(side >> i, side >> i) for i in range(levels)]
    # One skip per encoder ResBlock, per Downsample, and the stem; each decoder level takes
    # num_res_blocks + 1 of them.
    assert len(trace.skips) == 1 + levels * blocks + (levels - 1)
    for level in range(levels):
        assert sum(s.level == level for s in trace.skips) == blocks + 1
    assert all(s.mode == "concat" for s in trace.skips)
    # Attention where the config puts it (default: the lowest level), and always in the middle.
    attention = {n.level for n in trace.nodes if n.kind == "SelfAttention"}
    assert attention == set(cfg["attention_levels"] or [levels - 1]) | {levels - 1}


def test_tracing_leaves_the_model_as_it_was():
    net = DiffusionUNet(base_channels=8, channel_mult=(1, 2), norm_groups=4).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trace_unet(net, (1, 8, 8))
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not net._forward_hooks and not net._forward_pre_hooks


def test_bad_input_shape_is_reported():
    with pytest.raises(ValueError, match="input_shape"):
        trace_unet(UNet2015(features=(4, 8)), (16, 16))


def test_the_drawing_shows_what_was_traced():
    ax, trace = unet_diagram(UNet2015(features=(4, 8, 16)), (1, 16, 16), title="t")
    texts = " | ".join(t.get_text() for t in ax.texts)
    for lv in trace.levels:
        assert f"{lv.down_channels} ch" in texts
    assert "1 skip (concat, 4 ch)" in texts and "1 skip (concat, 8 ch)" in texts
    assert "MaxPool2d" in texts and "ConvTranspose2d" in texts


def test_receptive_field_diagram_draws_the_recurrence():
    path = unet_deepest_path(3)
    ax, rows = receptive_field_diagram(path)
    assert rows == layer_table(path)
    assert [round(b.get_width()) for b in ax.patches[:len(rows)]] == [r["rf"] for r in rows]
    assert any(f"{rows[-1]['rf']} px" in t.get_text() for t in ax.texts)


# -- legibility: sizes and overlaps measured with the renderer --------------------------------
COLUMN_PX = 720  # the page's column on a 1280-pixel screen


def _texts(ax):
    """Every text the figure draws: labels, title, legend, and the axes' own labels if shown."""
    texts = list(ax.texts) + [ax.title]
    legend = ax.get_legend()
    if legend is not None:
        texts += legend.get_texts()
    if ax.axison:
        texts += ax.get_xticklabels() + ax.get_yticklabels()
        texts += [ax.xaxis.label, ax.yaxis.label]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def _pixels_at_column_width(text, fig) -> float:
    """The text's size in CSS pixels when the figure fills (at most) the page's column."""
    width_px = fig.get_figwidth() * 96
    return text.get_fontsize() * 96 / 72 * min(1.0, COLUMN_PX / width_px)


def _layout_problems(ax) -> list[str]:
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    problems = []
    texts = _texts(ax)
    boxes = {t: t.get_window_extent(renderer) for t in texts}
    for t in texts:
        if _pixels_at_column_width(t, fig) < 9.0:
            problems.append(f"{t.get_text()!r} is {_pixels_at_column_width(t, fig):.1f} px")
        if not fig.bbox.contains(*boxes[t].p0) or not fig.bbox.contains(*boxes[t].p1):
            problems.append(f"{t.get_text()!r} leaves the figure")
    # every label drawn for a box lies inside that box
    patches = {p.get_gid(): p for p in ax.patches if (p.get_gid() or "").startswith("box:")}
    for t in texts:
        if t.get_gid() in patches:
            outline = patches[t.get_gid()].get_window_extent(renderer)
            inner = boxes[t]
            if not (outline.x0 <= inner.x0 and inner.x1 <= outline.x1
                    and outline.y0 <= inner.y0 and inner.y1 <= outline.y1):
                problems.append(f"{t.get_text()!r} overflows its box")
    # no two texts overlap (tick labels of one axis are laid out by matplotlib itself)
    for i, a in enumerate(texts):
        for b in texts[i + 1:]:
            if boxes[a].overlaps(boxes[b]):
                problems.append(f"{a.get_text()!r} overlaps {b.get_text()!r}")
    return problems


def _stable_diffusion():
    sd = pytest.importorskip("unet_edu.models.stable_diffusion")
    inputs = sd.example_inputs("sd-1.5")
    x = inputs.pop("x")
    return sd.stable_diffusion_unet("sd-1.5"), tuple(x.shape[1:]), inputs


@pytest.mark.parametrize("name, build, shape", [
    ("small 2015 U-Net", lambda: UNet2015(features=(4, 8, 16)), (1, 16, 16)),
    ("the paper's U-Net", lambda: UNet2015.paper().to("meta"), (1, 572, 572)),
    ("chapter 5's digit model", lambda: DiffusionUNet(
        base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2, num_classes=10,
        norm_groups=8), (1, 28, 28)),
    ("a deep diffusion U-Net", lambda: DiffusionUNet(
        base_channels=8, channel_mult=(1, 2, 4, 4), num_res_blocks=3, attention_levels=(1, 2, 3),
        norm_groups=4), (1, 32, 32)),
])
@pytest.mark.parametrize("height", [None, 3.9])
def test_unet_diagram_text_is_legible_and_inside_its_boxes(name, build, shape, height):
    import matplotlib.pyplot as plt

    fig, ax = (plt.subplots(figsize=(7.5, height), layout="constrained") if height
               else (None, None))
    ax, trace = unet_diagram(build(), shape, ax=ax, title=name)
    problems = _layout_problems(ax)
    plt.close(ax.figure)
    assert problems == [], f"{name}: " + "; ".join(problems)


def test_stable_diffusion_diagram_wraps_its_long_block_lists():
    import matplotlib.pyplot as plt

    model, shape, inputs = _stable_diffusion()
    ax, trace = unet_diagram(model, shape, **inputs)
    assert any("\n" in t.get_text() and "SpatialTransformer" in t.get_text() for t in ax.texts)
    problems = _layout_problems(ax)
    plt.close(ax.figure)
    assert problems == [], "Stable Diffusion 1.5: " + "; ".join(problems)


def test_receptive_field_diagram_is_legible():
    import matplotlib.pyplot as plt

    from unet_edu.exercises.chapter3 import unet_deepest_path

    fig, ax = plt.subplots(figsize=(7.5, 7.2), layout="constrained")
    ax, rows = receptive_field_diagram(unet_deepest_path(5), ax=ax, title="the paper's U-Net")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    bar_labels = [t for t in ax.texts if " px (jump" in t.get_text()]
    assert len(bar_labels) == len(rows)
    assert all(t.get_window_extent(renderer).x1 <= inside.x1 for t in bar_labels)
    problems = [p for p in _layout_problems(ax) if "px" in p and "overlaps" not in p]
    plt.close(fig)
    assert problems == []
