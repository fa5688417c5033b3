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
