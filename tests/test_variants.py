"""Attention U-Net, U-Net++ and 3D U-Net: shapes, gradients, pruning, configs and errors."""

import json

import pytest
import torch

from unet_edu.models import (
    MODELS, AttentionUNet, UNet2015, UNet3D, UNetPlusPlus, build_model, count_parameters,
)
from unet_edu.blocks import DoubleConv, norm_factory


def _all_params_get_gradients(model, loss):
    model.zero_grad()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("norm", [None, "batch", "group"])
@pytest.mark.parametrize("features,size", [((4, 8), (6, 10)), ((4, 8, 16), (16, 24)), ((8, 8, 16, 16), (32, 40))])
def test_attention_unet_shapes_and_gate_maps(norm, features, size):
    m = AttentionUNet(in_channels=2, out_channels=3, features=features, norm=norm, norm_groups=4)
    x = torch.randn(2, 2, *size)
    out = m(x)
    assert out.shape == (2, 3, *size)
    maps = m.gate_maps()
    assert len(maps) == len(features) - 1
    for i, a in enumerate(maps):
        assert a.shape == (2, 1, size[0] // 2**i, size[1] // 2**i)
        assert (a >= 0).all() and (a <= 1).all()
    _all_params_get_gradients(m, out.square().mean())


def test_attention_unet_without_gates_has_unet2015_parameter_count():
    f = (8, 16, 32, 64)
    plain = AttentionUNet(features=f, gates=False)
    assert count_parameters(plain) == count_parameters(UNet2015(features=f))
    with pytest.raises(ValueError, match="gates=False"):
        plain.gate_maps()
    with pytest.raises(ValueError, match="run the model"):
        AttentionUNet(features=f).gate_maps()


@pytest.mark.parametrize("features,size", [((4, 8), 6), ((4, 8, 16), 20), ((4, 8, 8, 16, 16), 32)])
def test_unetpp_all_heads_and_pruning(features, size):
    m = UNetPlusPlus(in_channels=1, out_channels=2, features=features)
    x = torch.randn(2, 1, size, size)
    outs = m.forward_all(x)
    assert len(outs) == len(features) - 1
    assert all(o.shape == (2, 2, size, size) for o in outs)
    for d in range(1, len(features)):
        # pruning computes fewer nodes but gives exactly the same output as the full pass
        torch.testing.assert_close(m(x, depth=d), outs[d - 1])
        assert len(m.node_outputs(x, depth=d)) == (d + 1) * (d + 2) // 2
    _all_params_get_gradients(m, sum(o.square().mean() for o in outs))


def test_unetpp_node_channels():
    m = UNetPlusPlus(features=(4, 8, 16))
    assert m.nodes["0_2"][0].in_channels == 3 * 4  # X00, X01 and the upsampled X11
    assert m.nodes["1_1"][0].in_channels == 2 * 8
    assert set(m.nodes) == {"0_0", "1_0", "2_0", "0_1", "1_1", "0_2"}


def test_unetpp_pruned_depth_needs_fewer_halvings():
    m = UNetPlusPlus(features=(4, 8, 16, 32))
    assert m(torch.randn(1, 1, 12, 12), depth=2).shape == (1, 2, 12, 12)  # 12 % 4 == 0
    with pytest.raises(ValueError, match=r"height 12 is not divisible by 8 .*use 8 or 16"):
        m(torch.randn(1, 1, 12, 12))
    with pytest.raises(ValueError, match=r"depth must be 1..3, got 4"):
        m(torch.randn(1, 1, 16, 16), depth=4)


@pytest.mark.parametrize("norm", [None, "batch", "group"])
@pytest.mark.parametrize("features,size", [((4, 8), (2, 4, 6)), ((4, 8, 8), (8, 12, 16))])
def test_unet3d_shapes_and_gradients(norm, features, size):
    m = UNet3D(in_channels=1, out_channels=3, features=features, norm=norm, norm_groups=4)
    x = torch.randn(2, 1, *size)
    out = m(x)
    assert out.shape == (2, 3, *size)
    _all_params_get_gradients(m, out.square().mean())


def test_unet3d_errors():
    m = UNet3D(features=(4, 8, 8))
    with pytest.raises(ValueError, match=r"depth 10 is not divisible by 4 .*use 8 or 12"):
        m(torch.randn(1, 1, 10, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, C, D, H, W\).*unsqueeze\(0\)"):
        m(torch.randn(1, 8, 8, 8))
    with pytest.raises(ValueError, match=r"built for 1 input channel\(s\) but got 2"):
        m(torch.randn(1, 2, 8, 8, 8))


@pytest.mark.parametrize("cls", [AttentionUNet, UNetPlusPlus])
def test_2d_variant_errors(cls):
    m = cls(features=(4, 8, 16))
    with pytest.raises(ValueError, match=r"width 18 is not divisible by 4 .*use 16 or 20"):
        m(torch.randn(1, 1, 16, 18))
    with pytest.raises(ValueError, match=r"built for 1 input channel\(s\) but got 3"):
        m(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="norm must be"):
        cls(features=(4, 8), norm="layer")
    with pytest.raises(ValueError, match=r"GroupNorm with 8 groups cannot split 12 channels"):
        cls(features=(12, 24), norm="group", norm_groups=8)
    with pytest.raises(ValueError, match="at least 2 levels"):
        cls(features=(8,))


@pytest.mark.parametrize(
    "name,config,shape",
    [
        ("AttentionUNet", dict(features=[4, 8], norm="group", norm_groups=2), (1, 1, 8, 8)),
        ("UNetPlusPlus", dict(features=[4, 8, 8], out_channels=3), (1, 1, 8, 8)),
        ("UNet3D", dict(features=[4, 8], norm="batch"), (1, 1, 4, 4, 4)),
    ],
)
def test_config_round_trip(name, config, shape):
    m = MODELS[name](**config)
    cfg = json.loads(json.dumps(m.config))
    again = build_model(name, cfg)
    again.load_state_dict(m.state_dict())
    m.eval(), again.eval()
    x = torch.randn(*shape)
    torch.testing.assert_close(m(x), again(x))


def test_double_conv_with_group_norm_factory():
    b = DoubleConv(3, 8, norm=norm_factory("group", groups=4))
    kinds = [type(layer).__name__ for layer in b]
    assert kinds == ["Conv2d", "GroupNorm", "ReLU", "Conv2d", "GroupNorm", "ReLU"]
    assert b[1].num_groups == 4


def test_gate_explorer_frames():
    from unet_edu.widgets.gates import GateExplorer, gate_frames, gate_maps_for

    m = AttentionUNet(features=(4, 8, 16))
    m.train()
    x = torch.rand(3, 1, 16, 16)
    pred, maps = gate_maps_for(m, x)
    assert m.training  # mode restored
    assert pred.shape == (3, 16, 16) and [a.shape for a in maps] == [(3, 16, 16), (3, 8, 8)]
    frames = gate_frames(m, x, masks=torch.zeros(3, 16, 16, dtype=torch.long))
    assert len(frames) == 3 and all(f.startswith(b"\x89PNG") for f in frames)
    assert GateExplorer(m, x[:2]) is not None
    with pytest.raises(ValueError, match="gates=True"):
        gate_maps_for(AttentionUNet(features=(4, 8), gates=False), x)
