"""Stable Diffusion's U-Nets rebuilt from the package's blocks, counted to the parameter, and the
transformer blocks they (and DiT) are made of."""

import pytest
import torch
from torch import nn

from unet_edu.blocks import (AdaLNZeroBlock, MultiHeadAttention, ResBlock, SpatialTransformer,
                             TransformerBlock)
from unet_edu.models import DiffusionUNet, build_model, count_parameters
from unet_edu.models.stable_diffusion import (CONFIGS, LATENT_SHAPES, PUBLISHED_PARAMETERS,
                                              bottleneck_share, example_inputs, level_table,
                                              sdxl_label, stable_diffusion_unet)


@pytest.fixture(scope="module")
def sd15():
    return stable_diffusion_unet("sd-1.5")


@pytest.fixture(scope="module")
def sdxl():
    return stable_diffusion_unet("sdxl")


def test_sd15_has_exactly_the_published_number_of_parameters(sd15):
    assert all(p.is_meta for p in sd15.parameters())  # nothing allocated, nothing downloaded
    assert count_parameters(sd15) == PUBLISHED_PARAMETERS["sd-1.5"] == 859_520_964


def test_sdxl_has_exactly_the_published_number_of_parameters(sdxl):
    assert count_parameters(sdxl) == PUBLISHED_PARAMETERS["sdxl"] == 2_567_463_684


def _transformers(attns):
    return [m for m in attns.modules() if isinstance(m, SpatialTransformer)]


def test_sd15_layout(sd15):
    rows = level_table(sd15, input_size=64)
    assert sum(r["parameters"] for r in rows) == PUBLISHED_PARAMETERS["sd-1.5"]
    down = [r for r in rows if r["part"] == "down"]
    up = [r for r in rows if r["part"] == "up"]
    assert [(r["channels"], r["size"], r["res_blocks"], r["transformer_blocks"]) for r in down] == [
        (320, 64, 2, 2), (640, 32, 2, 2), (1280, 16, 2, 2), (1280, 8, 2, 0)]
    assert [(r["channels"], r["res_blocks"], r["transformer_blocks"]) for r in up] == [
        (1280, 3, 0), (1280, 3, 3), (640, 3, 3), (320, 3, 3)]
    middle = next(r for r in rows if r["part"] == "middle")
    assert middle["transformer_blocks"] == 1 and middle["size"] == 8
    # one cross-attention per transformer block: the text is read at 64, 32, 16 and 8
    assert all(r["cross_attention"] == r["transformer_blocks"] for r in rows)
    st = _transformers(sd15.down[0]["attns"])[0]
    assert isinstance(st.proj_in, nn.Conv2d) and st.blocks[0].attn1.num_heads == 8
    assert st.blocks[0].attn2.to_k.in_features == 768
    assert sd15.time_embed[1].out_features == 1280
    res = sd15.down[0]["blocks"][0]
    assert res.time_mode == "add" and res.norm1.num_groups == 32


def test_sdxl_layout(sdxl):
    rows = level_table(sdxl, input_size=128)
    assert sum(r["parameters"] for r in rows) == PUBLISHED_PARAMETERS["sdxl"]
    blocks = {(r["part"], r["level"]): r["transformer_blocks"] for r in rows}
    assert blocks == {("embeddings", None): 0, ("conv_in, norm_out, conv_out", None): 0,
                      ("down", 0): 0, ("down", 1): 4, ("down", 2): 20, ("middle", 2): 10,
                      ("up", 2): 30, ("up", 1): 6, ("up", 0): 0}
    st = _transformers(sdxl.down[2]["attns"])[0]
    assert isinstance(st.proj_in, nn.Linear) and len(st.blocks) == 10
    assert st.blocks[0].attn1.num_heads == 20 and st.blocks[0].attn2.to_k.in_features == 2048
    assert _transformers(sdxl.down[1]["attns"])[0].blocks[0].attn1.num_heads == 10
    # the extra "text_time" embedding: 2,816 -> 1,280 -> 1,280
    assert [m.in_features for m in sdxl.label_embed if isinstance(m, nn.Linear)] == [2816, 1280]


def test_the_text_enters_at_several_levels_not_only_the_bottleneck(sd15, sdxl):
    # "the bottleneck has cross-attention to the text embedding": it has, but it is one
    # layer of 16 in SD 1.5 and 10 of 70 in SDXL; the others sit at the upper levels.
    assert bottleneck_share(sd15) == {"middle": 1, "elsewhere": 15, "total": 16,
                                      "middle_fraction": 1 / 16, "levels": [0, 1, 2]}
    assert bottleneck_share(sdxl) == {"middle": 10, "elsewhere": 60, "total": 70,
                                      "middle_fraction": 1 / 7, "levels": [1, 2]}
    # chapter 5's layout counts its CrossAttention layers too, and a U-Net without text none
    ch5 = DiffusionUNet(**TINY, attention_levels=(1,), context_dim=6)
    assert bottleneck_share(ch5) == {"middle": 1, "elsewhere": 3, "total": 4,
                                     "middle_fraction": 0.25, "levels": [1]}
    assert bottleneck_share(DiffusionUNet(**TINY))["total"] == 0


@pytest.mark.parametrize("version", ["sd-1.5", "sdxl"])
def test_one_forward_pass_on_the_meta_device(version, sd15, sdxl):
    model = sd15 if version == "sd-1.5" else sdxl
    inputs = example_inputs(version)
    out = model(**inputs)
    assert out.is_meta and tuple(out.shape[1:]) == LATENT_SHAPES[version]


def test_the_diagram_tool_draws_sd15(sd15):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from unet_edu.diagrams import unet_diagram

    inputs = example_inputs("sd-1.5")
    x = inputs.pop("x")
    ax, trace = unet_diagram(sd15, tuple(x.shape[1:]), **inputs)
    assert [lv.down_channels for lv in trace.levels] == [320, 640, 1280, 1280]
    assert [lv.down_size for lv in trace.levels] == [(64, 64), (32, 32), (16, 16), (8, 8)]
    assert len(trace.skips) == 12  # conv_in, 8 ResBlocks, 3 downsamplings
    plt.close(ax.figure)


def test_the_diagram_tool_draws_sdxl_with_its_size_conditioning(sdxl):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from unet_edu.diagrams import unet_diagram

    inputs = example_inputs("sdxl")
    x = inputs.pop("x")
    assert inputs["y"].shape == (1, 2816)
    ax, trace = unet_diagram(sdxl, tuple(x.shape[1:]), **inputs)
    assert [lv.down_channels for lv in trace.levels] == [320, 640, 1280]
    assert [lv.down_size for lv in trace.levels] == [(128, 128), (64, 64), (32, 32)]
    assert len(trace.skips) == 9  # conv_in, 6 ResBlocks, 2 downsamplings
    plt.close(ax.figure)


def test_sdxl_label_is_pooled_text_and_fourier_features_of_six_numbers():
    pooled = torch.randn(2, 1280)
    y = sdxl_label(pooled, (1024, 768), (0, 128), (1024, 1024))
    assert y.shape == (2, 2816)
    torch.testing.assert_close(y[:, :1280], pooled)
    other = sdxl_label(pooled, (512, 768), (0, 128), (1024, 1024))
    assert not torch.allclose(y[:, 1280:1536], other[:, 1280:1536])  # original height changed
    torch.testing.assert_close(y[:, 1536:], other[:, 1536:])
    with pytest.raises(ValueError, match=r"\(B, 1280\)"):
        sdxl_label(torch.zeros(2, 768), (1, 1), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="finite numbers"):
        sdxl_label(pooled, (1024, float("nan")), (0, 0), (1024, 1024))
    with pytest.raises(ValueError, match="unknown Stable Diffusion version 'sd-3'"):
        stable_diffusion_unet("sd-3")


def test_the_configs_rebuild_through_build_model():
    small = {**CONFIGS["sd-1.5"], "base_channels": 32, "context_dim": 16, "num_heads": 4}
    model = DiffusionUNet(**small)
    twin = build_model("DiffusionUNet", model.config)
    assert twin.config == model.config and count_parameters(twin) == count_parameters(model)


# --- DiffusionUNet's Stable Diffusion options ----------------------------------------------------
TINY = dict(in_channels=4, out_channels=4, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
            num_heads=2, norm_groups=4, num_timesteps=50)


def test_transformer_options_are_checked():
    with pytest.raises(ValueError, match="has 3 numbers but the model has 2 levels"):
        DiffusionUNet(**TINY, transformer_depth=(1, 1, 1))
    with pytest.raises(ValueError, match="need at least one block each"):
        DiffusionUNet(**TINY, attention_levels=(0, 1), transformer_depth=(0, 1))
    with pytest.raises(ValueError, match="head_channels=3 does not divide the 8 channels"):
        DiffusionUNet(**TINY, attention_levels=(0,), transformer_depth=1, head_channels=3)
    with pytest.raises(ValueError, match="both describe y"):
        DiffusionUNet(**TINY, num_classes=10, label_dim=6)


def test_label_vectors_are_embedded_and_checked():
    model = DiffusionUNet(**TINY, label_dim=6).eval()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([3, 3])
    with torch.no_grad():
        a = model(x, t, torch.zeros(2, 6))
        b = model(x, t, torch.ones(2, 6))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match=r"label_dim=6: pass y, one label vector per image, of "
                                         r"shape \(2, 6\)"):
        model(x, t)
    with pytest.raises(ValueError, match="must be floats"):
        model(x, t, torch.zeros(2, 6, dtype=torch.long))


def test_chapter_5_models_keep_their_attention_and_config():
    model = DiffusionUNet(**TINY)
    names = {type(m).__name__ for m in model.modules()}
    assert "SelfAttention" in names and "SpatialTransformer" not in names
    for key in ("transformer_depth", "linear_projection", "head_channels", "label_dim"):
        assert model.config[key] is None  # configs saved before these options load unchanged


# --- the blocks ---------------------------------------------------------------------------------
def test_attention_weights_kept_match_the_fused_kernel():
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, context_dim=8, num_heads=4)
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 3, 8)
    fused = attn(x, ctx)
    attn.keep_weights = True
    explicit = attn(x, ctx)
    torch.testing.assert_close(explicit, fused, rtol=1e-5, atol=1e-5)
    w = attn.last_weights
    assert w.shape == (2, 4, 5, 3)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 5))


def test_a_mask_hides_padding_keys_in_both_paths():
    torch.manual_seed(1)
    attn = MultiHeadAttention(8, num_heads=2)
    x = torch.randn(1, 4, 8)
    mask = torch.tensor([[True, True, False, False]])
    fused = attn(x, mask=mask)
    attn.keep_weights = True
    torch.testing.assert_close(attn(x, mask=mask), fused, rtol=1e-5, atol=1e-5)
    assert float(attn.last_weights[..., 2:].abs().max()) == 0.0
    # what stands at a hidden position does not matter
    y = x.clone()
    y[:, 2:] = 100.0
    torch.testing.assert_close(attn(y, mask=mask)[:, :2], fused[:, :2], rtol=1e-5, atol=1e-5)


def test_attention_errors():
    attn = MultiHeadAttention(8, context_dim=6, num_heads=2)
    with pytest.raises(ValueError, match="pass context="):
        attn(torch.randn(1, 4, 8))
    with pytest.raises(ValueError, match=r"shape \(1, M, 6\)"):
        attn(torch.randn(1, 4, 8), torch.randn(1, 3, 5))
    with pytest.raises(ValueError, match="cannot be split into 3 heads"):
        MultiHeadAttention(8, num_heads=3)


def test_a_new_spatial_transformer_is_the_identity():
    for linear in (False, True):
        st = SpatialTransformer(16, num_heads=2, context_dim=8, depth=2, norm_groups=4,
                                linear_projection=linear)
        x = torch.randn(2, 16, 4, 4)
        assert torch.equal(st(x, torch.randn(2, 3, 8)), x)  # proj_out starts at zero
    with pytest.raises(ValueError, match="depth must be at least 1"):
        SpatialTransformer(16, depth=0, norm_groups=4)


def test_transformer_block_without_context_is_a_plain_layer():
    block = TransformerBlock(8, num_heads=2)
    assert block.attn2 is None and block(torch.randn(1, 3, 8)).shape == (1, 3, 8)
    # GEGLU: the feed-forward layer's first projection makes values and gates (2 x 4 x dim)
    assert block.ff[0].proj.out_features == 64


def test_adaln_zero_block_starts_as_the_identity_and_then_learns():
    torch.manual_seed(0)
    block = AdaLNZeroBlock(16, cond_dim=12, num_heads=4)
    x, c = torch.randn(3, 5, 16), torch.randn(3, 12)
    assert torch.equal(block(x, c), x)  # every gate is zero: the block adds nothing
    target = torch.randn(3, 5, 16)
    optimizer = torch.optim.SGD(block.parameters(), lr=0.1)
    loss = (block(x, c) - target).square().mean()
    loss.backward()
    modulation = block.modulation[1].weight
    assert float(modulation.grad.abs().sum()) > 0  # the zero layer still gets a gradient
    # at zero gates only the gates' rows (the 3rd and 6th of the six chunks) are pushed
    rows = modulation.grad.abs().sum(1).reshape(6, 16).sum(1)
    assert rows[2] > 0 and rows[5] > 0 and rows[[0, 1, 3, 4]].abs().max() == 0
    optimizer.step()
    assert not torch.allclose(block(x, c), x)


def test_adaln_modulation_is_chapter_4s_scale_shift():
    # LN(x) * (1 + scale) + shift, the ResBlock's h * (1 + gamma) + beta on a LayerNorm
    torch.manual_seed(2)
    block = AdaLNZeroBlock(8, cond_dim=4, num_heads=2)
    with torch.no_grad():
        block.modulation[1].weight.normal_()
        block.modulation[1].bias.normal_()
        for p in block.attn.parameters():
            p.zero_()  # the attention branch adds to_out's bias only: zero it too
    x, c = torch.randn(2, 3, 8), torch.randn(2, 4)
    shift1, scale1, gate1, shift2, scale2, gate2 = block.modulation(c)[:, None].chunk(6, -1)
    h = x  # the attention branch is zero
    ln = nn.functional.layer_norm(h, (8,), eps=1e-6)
    expected = h + gate2 * block.mlp(ln * (1 + scale2) + shift2)
    torch.testing.assert_close(block(x, c), expected)
    res = ResBlock(8, 8, emb_dim=4, norm_groups=2)
    assert res.time_mode == "scale_shift"  # the conditioning chapter 4 measured
    with pytest.raises(ValueError, match=r"shape \(2, cond_dim\)"):
        block(x, torch.randn(4))
