"""The models' shared structure: recorded configs, cheap input checks, compilable forward."""

import inspect
import shutil

import pytest
import torch

from unet_edu.models import MODELS, DiffusionUNet, UNet2015
from unet_edu.train import load_checkpoint, save_checkpoint

# A small, non-default configuration per registered model, so a lost argument would show.
SMALL = {
    "NaiveCNN": (dict(in_channels=2, hidden=4, depth=3, out_channels=3), (1, 2, 8, 8)),
    "UNet2015": (dict(features=(4, 8), skip="add", norm="batch"), (1, 1, 8, 8)),
    "DiffusionUNet": (
        dict(base_channels=8, channel_mult=(1, 2), norm_groups=4, num_heads=2, num_classes=3,
             num_timesteps=50),
        (1, 1, 8, 8),
    ),
    "AttentionUNet": (dict(features=(4, 8), norm="group", norm_groups=2), (1, 1, 8, 8)),
    "UNetPlusPlus": (dict(features=(4, 8, 8), out_channels=3), (1, 1, 8, 8)),
    "UNet3D": (dict(features=(4, 8), norm="batch", norm_groups=2), (1, 1, 4, 4, 4)),
    "DnCNN": (dict(in_channels=1, hidden=4, depth=3), (1, 1, 8, 8)),
    "TextConditionedUNet": (
        dict(vocab_size=12, max_length=4, text_width=8, text_layers=1, text_heads=2,
             in_channels=2, out_channels=2, base_channels=8, channel_mult=(1, 2),
             attention_levels=(1,), num_heads=2, norm_groups=4, num_timesteps=50),
        (1, 2, 8, 8),
    ),
}


def _extra_inputs(name: str, n: int, with_label: bool = False) -> tuple:
    """What a model reads besides the image, for a batch of ``n``: the timestep t, and a class
    label or a caption's tokens."""
    t = torch.full((n,), 5, dtype=torch.long)
    if name == "DiffusionUNet":
        return (t, torch.ones(n, dtype=torch.long)) if with_label else (t,)
    if name == "TextConditionedUNet":
        return t, torch.ones((n, SMALL[name][0]["max_length"]), dtype=torch.long)
    return ()


def test_every_registered_model_has_a_small_configuration_here():
    assert set(SMALL) == set(MODELS)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_config_matches_signature_and_round_trips_through_a_checkpoint(name, tmp_path):
    cls = MODELS[name]
    kwargs, shape = SMALL[name]
    torch.manual_seed(0)
    model = cls(**kwargs).eval()
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    assert list(model.config) == params
    for key, value in kwargs.items():
        expected = list(value) if isinstance(value, tuple) else value
        assert model.config[key] == expected, key
    path = save_checkpoint(tmp_path / f"{name}.safetensors", model)
    again, info = load_checkpoint(path)
    assert type(again) is cls and again.config == model.config == info.config
    x = torch.randn(*shape)
    extra = _extra_inputs(name, 1, with_label=True)
    torch.testing.assert_close(again.eval()(x, *extra), model(x, *extra))


def test_config_defaults_are_recorded():
    m = UNet2015()
    assert m.config == dict(in_channels=1, out_channels=2, features=[64, 128, 256, 512],
                            padding="same", skip="concat", norm=None)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_input_checks_name_the_fix(name):
    kwargs, shape = SMALL[name]
    model = MODELS[name](**kwargs)
    extra = _extra_inputs(name, 1)
    with pytest.raises(ValueError, match=r"floating-point pixels, got torch.uint8; use x.float"):
        model(torch.zeros(shape, dtype=torch.uint8), *extra)
    with pytest.raises(ValueError, match=r"torch.float32 weights but got a torch.float64 input"):
        model(torch.zeros(shape, dtype=torch.float64), *extra)
    with pytest.raises(ValueError, match=r"empty batch .*pass at least one"):
        model(torch.zeros((0, *shape[1:])), *_extra_inputs(name, 0))
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        model(torch.zeros(shape[1:]), *extra)


def test_other_float_dtypes_pass_under_autocast():
    model = UNet2015(features=(4, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.randn(1, 1, 8, 8, dtype=torch.bfloat16)).shape == (1, 2, 8, 8)


def test_3d_checks_share_the_2d_wording():
    model = MODELS["UNet3D"](features=(4, 8))
    with pytest.raises(ValueError, match=r"\(B, C, D, H, W\).*one volume without a batch axis"):
        model(torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match=r"depth 5 is not divisible by 2 .*pad the volume"):
        model(torch.zeros(1, 1, 5, 4, 4))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_heads=0), r"cannot be split into 0 heads; use num_heads in \[1, 2, 4, 8, 16\]"),
        (dict(norm_groups=0), r"norm_groups must be at least 1, got 0"),
        (dict(norm_groups=5), r"GroupNorm with 5 groups cannot split 16 channels"),
        (dict(channel_mult=()), r"channel_mult needs one positive multiplier per level, got \(\)"),
        (dict(num_classes=0), r"num_classes must be at least 1, got 0; use num_classes=None"),
    ],
)
def test_diffusion_unet_constructor_checks(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiffusionUNet(**{"base_channels": 16, "norm_groups": 8, **kwargs})


def test_float_labels_are_refused_not_truncated():
    m = DiffusionUNet(base_channels=8, channel_mult=(1, 2), norm_groups=4, num_classes=3)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"labels must be integer class ids, got torch.float32; "
                                         r"use y.long\(\)"):
        m(x, t, torch.tensor([1.0, 2.7]))
    assert m(x, t, torch.tensor([1, 2])).shape == x.shape


def test_variant_constructor_checks():
    with pytest.raises(ValueError, match=r"norm_groups must be at least 1, got 0"):
        MODELS["AttentionUNet"](features=(4, 8), norm="group", norm_groups=0)
    with pytest.raises(ValueError, match=r"at least 1 channel"):
        MODELS["UNet3D"](features=(4, 0))


def _no_sync_forward(model, *inputs):
    """Run forward with every tensor-to-Python conversion turned into an error."""
    forbidden = ["item", "__bool__", "tolist", "__int__", "__float__"]
    saved = {name: getattr(torch.Tensor, name) for name in forbidden}

    def refuse(self, *args, **kwargs):
        raise AssertionError("forward read a tensor value on the host")

    try:
        for name in forbidden:
            setattr(torch.Tensor, name, refuse)
        return model(*inputs)
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def test_diffusion_unet_forward_reads_no_tensor_values():
    m = DiffusionUNet(base_channels=8, channel_mult=(1, 2), norm_groups=4, num_heads=2,
                      num_classes=3, context_dim=4, attention_levels=(0, 1))
    out = _no_sync_forward(m, torch.randn(2, 1, 8, 8), torch.tensor([3, 7]), torch.tensor([0, 3]),
                           torch.randn(2, 5, 4))
    assert out.shape == (2, 1, 8, 8)


@pytest.mark.parametrize("name", ["UNet2015", "AttentionUNet", "UNet3D", "NaiveCNN"])
def test_unet_forward_reads_no_tensor_values(name):
    kwargs, shape = SMALL[name]
    assert _no_sync_forward(MODELS[name](**kwargs), torch.randn(*shape)).shape[0] == 1


@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                    reason="torch.compile on the CPU needs a C compiler (none found)")
def test_tiny_diffusion_unet_compiles_with_fullgraph():
    torch.manual_seed(0)
    m = DiffusionUNet(base_channels=8, channel_mult=(1, 2), norm_groups=4, num_heads=2,
                      num_classes=3).eval()
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([3, 40]), torch.tensor([0, 3])
    compiled = torch.compile(m, fullgraph=True)  # fullgraph: any graph break is an error
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, t, y), m(x, t, y), rtol=1e-4, atol=1e-5)
