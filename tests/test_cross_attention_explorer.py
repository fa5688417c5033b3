"""The cross-attention explorer: recorded maps, the figure, frames, controls and page size."""

import ipywidgets as W
import pytest
import torch

from unet_edu import captions as cap
from unet_edu.diffusion import NoiseSchedule
from unet_edu.latent import DigitAutoencoder
from unet_edu.latent_diffusion import LatentDiffusion
from unet_edu.models import TextConditionedUNet
from unet_edu.widgets import IPYWIDGETS_8
from unet_edu.widgets.cross_attention import (CAPTIONS, CrossAttentionExplorer,
                                              attention_figure, attention_record, select_steps)


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    tok = cap.tokenizer()
    model = TextConditionedUNet(
        len(tok), max_length=8, text_width=16, text_layers=1, text_heads=2, in_channels=4,
        out_channels=4, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
        attention_levels=(0, 1), num_heads=2, norm_groups=4, transformer_depth=1,
        num_timesteps=50)
    # proj_out starts at zero; random weights there make every layer's output matter.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "proj_out" in name:
                p.normal_(0, 0.2)
    vae = DigitAutoencoder(channels=(8, 8, 8), norm_groups=4)
    return LatentDiffusion(vae.eval(), model.eval(), NoiseSchedule("cosine", 50), 0.7)


@pytest.fixture(scope="module")
def record(pipe):
    return attention_record(pipe, CAPTIONS, steps=6, guidance_scale=3.0, seed=1)


@pytest.fixture(scope="module")
def explorer(record):
    return CrossAttentionExplorer(record=record, frames=4)


def test_the_record_holds_one_map_per_token_and_position(record):
    assert record.sides == [8, 4] and len(record.timesteps) == 6
    assert record.maps[8].shape == (6, 4, 8, 8, 8) and record.maps[4].shape == (6, 4, 8, 4, 4)
    for side in record.sides:  # every latent position spreads one unit of attention over tokens
        torch.testing.assert_close(record.maps[side].sum(2), torch.ones(6, 4, side, side))
    assert record.tokens[0][:4] == ["<start>", "thick", "seven", "<end>"]
    assert record.canvas.shape == (4, 32, 32) and len(record.x0) == 6
    assert 0 <= float(record.canvas.min()) and float(record.canvas.max()) <= 1


def test_the_maps_change_with_the_caption(pipe):
    a = attention_record(pipe, ["thick seven"], steps=3, seed=1)
    b = attention_record(pipe, ["thin seven"], steps=3, seed=1)
    assert not torch.allclose(a.maps[8][:, 0, 1], b.maps[8][:, 0, 1])
    with pytest.raises(ValueError, match="captions is empty"):
        attention_record(pipe, [])
    with pytest.raises(ValueError, match="unknown word 'sevn'"):
        attention_record(pipe, ["sevn"])


def test_select_steps_keeps_the_first_and_the_last():
    assert select_steps(20, 5) == [0, 5, 10, 14, 19]
    assert select_steps(3, 8) == [0, 1, 2] and select_steps(7, 1) == [6]
    with pytest.raises(ValueError, match="frames"):
        select_steps(5, 0)


def test_the_figure_has_a_row_per_level_and_a_column_per_token(record):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = attention_figure(record, sample=2, step=-1)
    axes = fig.axes
    assert len(axes) == 2 * 5 + 2  # rows 8x8 and 4x4; <start> two slanted left <end>; 2 bars
    assert [a.get_title() for a in axes[:5]] == ["<start>", "two", "slanted", "left", "<end>"]
    assert [a.get_ylabel() for a in axes[-2:]] == ["attention", "attention"]
    # each row's colour scale ends at that row's largest weight among the shown tokens
    top = float(record.maps[4][-1, 2][[0, 1, 2, 3, 4]].max())
    assert axes[5].images[1].get_clim() == pytest.approx((0.0, top))
    plt.close(fig)
    with pytest.raises(ValueError, match="sample must lie"):
        attention_figure(record, sample=4)
    with pytest.raises(ValueError, match="step must lie"):
        attention_figure(record, step=6)


def test_the_explorer_offers_every_caption_token_level_and_step(explorer, record):
    e = explorer
    assert [label for label, _ in e.caption.options] == list(CAPTIONS)
    # token buttons name the caption's own tokens, padding left out
    assert [label for label, _ in e.tokens[0].options] == ["<start>", "thick", "seven", "<end>"]
    assert [label for label, _ in e.tokens[3].options] == [
        "<start>", "narrow", "one", "slanted", "right", "<end>"]
    # the step slider reads out the timestep itself
    assert list(e.step.options) == [(str(record.timesteps[i]), k)
                                    for k, i in enumerate([0, 2, 3, 5])]
    assert e.sides == [8, 4] and e.steps == [0, 2, 3, 5]
    n_tokens = sum(len(o) for o in e.token_options)
    assert len(e.map_pngs) == n_tokens * 2 * 4 and len(e.digit_pngs) == 4 * 4
    assert e.shown_key() == (0, 1, 8, 3)
    assert e.value_max == pytest.approx(max(float(m.max()) for m in record.maps.values()))


def test_every_control_changes_the_shown_picture(explorer):
    e = explorer
    for control in e.controls():
        trait = "index"
        before, old = e.shown_pngs(), getattr(control, trait)
        setattr(control, trait, 0 if old else 1)
        assert e.shown_pngs() != before, f"{control.description} did not change the picture"
        setattr(control, trait, old)
    e.caption.index = 3  # the token buttons of another caption work too
    before = e.shown_pngs()
    e.tokens[3].index = 4
    assert e.shown_pngs() != before and e.controls()[1] is e.tokens[3]
    e.caption.index, e.tokens[3].index = 0, 1


def _leaves(widget, path=()):
    if isinstance(widget, W.Image):
        return [(path, widget)]
    return [leaf for i, child in enumerate(widget.children) for leaf in _leaves(child, path + (i,))]


@pytest.mark.skipif(not IPYWIDGETS_8, reason="Stack and browser links need ipywidgets 8")
def test_every_picture_sits_where_its_controls_point(explorer):
    e = explorer
    digits, maps = e.view.children
    assert digits.links[0].source == (e.caption, "index")
    assert maps.links[0].source == (e.caption, "index")
    assert e.token_row.links[0].source == (e.caption, "index")
    for b in range(4):
        assert maps.children[b].links[0].source == (e.tokens[b], "index")
    assert maps.children[0].children[0].links[0].source == (e.level, "index")
    assert maps.children[0].children[0].children[0].links[0].source == (e.step, "index")
    for (b, t, s, k), image in _leaves(maps):
        assert image.value == e.map_pngs[(b, e.token_options[b][t][1], e.sides[s], k)]
    for (b, k), image in _leaves(digits):
        assert image.value == e.digit_pngs[(b, k)]


def _visible(widget):
    """The child a stack shows now (ipywidgets 8: its selected index; 7: its only child)."""
    return widget.children[widget.selected_index] if IPYWIDGETS_8 else widget.children[0]


def _shown_images(e):
    """The two pictures on screen, followed from the view down through each visible child."""
    shown = []
    for half in e.view.children:
        w = half
        while not isinstance(w, W.Image):
            w = _visible(w)
        shown.append(w.value)
    return tuple(shown)


def test_every_value_of_every_control_shows_its_own_picture(explorer):
    # The Python observers switch the view without a browser: every value of every visible
    # control (the caption, that caption's token buttons, the maps' level, t) puts the
    # precomputed pictures of its own key on screen, and each control changes them.
    e = explorer
    assert _shown_images(e) == e.shown_pngs()
    for b in range(len(e.caption.options)):
        e.caption.index = b
        assert _visible(e.token_row) is e.tokens[b] and e.controls()[1] is e.tokens[b]
        for control in e.controls()[1:]:
            old, keys, seen = control.index, set(), []
            for i in range(len(control.options)):
                control.index = i
                assert _shown_images(e) == e.shown_pngs(), control.description
                keys.add(e.shown_key())
                seen.append(e.shown_pngs())
            control.index = old
            assert len(keys) == len(control.options), control.description
            if control is e.step:
                # the untrained fixture's prediction settles after one step, so later frames
                # may repeat after quantisation; the first and the last still differ
                assert seen[0] != seen[-1], f"{control.description} did not change the picture"
            else:
                assert len(set(seen)) == len(seen), f"{control.description}: a picture twice"
    seen = []
    for b in range(len(e.caption.options)):
        e.caption.index = b
        seen.append(_shown_images(e)[0])  # the digit itself differs from caption to caption
    assert len(set(seen)) == len(seen)
    e.caption.index = 0


def test_the_step_line_names_the_step_and_its_t(explorer, record):
    e = explorer
    texts, heights = [], set()
    for k in range(len(e.steps)):
        e.step.index = k
        line = _visible(e.step_lines)
        texts.append(line.value)
        heights.add(line.layout.height)
    e.step.index = len(e.steps) - 1
    assert f"step 1 of 6</b>, t = {record.timesteps[0]}" in texts[0]
    assert f"step 6 of 6</b>, t = {record.timesteps[5]} (the last" in texts[-1]
    assert all("the last" not in t for t in texts[:-1]) and "guidance 3" in texts[1]
    assert len(heights) == 1  # the layout does not jump when t changes


def test_bad_inputs_are_refused_before_any_sampling(pipe):
    with pytest.raises(ValueError, match="guidance_scale must be a finite number, got nan"):
        CrossAttentionExplorer(pipe, steps=2, guidance_scale=float("nan"))
    with pytest.raises(ValueError, match="unknown word 'sevn'; did you mean 'seven'"):
        CrossAttentionExplorer(pipe, ["thick sevn"], steps=2)
    with pytest.raises(ValueError, match="is empty; write one"):
        CrossAttentionExplorer(pipe, ["seven", " "], steps=2)
    with pytest.raises(ValueError, match="frames must be a whole number of at least 1"):
        CrossAttentionExplorer(pipe, steps=2, frames=0)
    with pytest.raises(ValueError, match="pipe must be a LatentDiffusion"):
        CrossAttentionExplorer(object(), steps=2)


def test_a_model_with_nan_weights_is_refused(pipe):
    import copy

    broken = copy.deepcopy(pipe)
    with torch.no_grad():
        broken.model.unet.conv_in.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite value"):
        CrossAttentionExplorer(broken, steps=2, frames=2)


def test_the_saved_page_payload_stays_small():
    # The chapter's explorer: the shipped model's architecture (untrained here), its four
    # captions, 8 of 20 steps.  The whole chapter page must stay under 1.5 MB of HTML; its
    # text, code and other outputs take about 0.3 MB and its figures are separate files, so
    # the explorer may take at most 0.6 MB (this one takes about 0.36 MB).
    from tools.train_latent import LDM_CONFIG, VAE_CONFIG

    torch.manual_seed(0)
    model = TextConditionedUNet(len(cap.tokenizer()), **LDM_CONFIG, num_timesteps=1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "proj_out" in name:
                p.normal_(0, 0.2)
    pipe = LatentDiffusion(DigitAutoencoder(**VAE_CONFIG).eval(), model.eval(),
                           NoiseSchedule("cosine", 1000), 0.8)
    e = CrossAttentionExplorer(pipe, steps=20, frames=8)
    assert e.sides == [8, 4] and len(e.steps) == 8
    assert len(e.map_pngs) == (4 + 5 + 5 + 6) * 2 * 8  # tokens x levels x steps
    size = e.state_bytes()
    assert size < 600_000, f"the explorer adds {size:,} bytes to the page"
