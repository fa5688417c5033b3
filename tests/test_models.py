import pytest
import torch

from unet_edu.models import DiffusionUNet, NaiveCNN, UNet2015, build_model, count_parameters


@pytest.mark.parametrize("depth,hidden", [(2, 8), (5, 16), (8, 4)])
@pytest.mark.parametrize("size", [(17, 23), (28, 28)])
def test_naive_cnn_keeps_shape_and_ignores_t(depth, hidden, size):
    m = NaiveCNN(in_channels=3, hidden=hidden, depth=depth)
    x = torch.randn(2, 3, *size)
    out = m(x, t=torch.tensor([1, 999]))
    assert out.shape == x.shape
    assert torch.equal(out, m(x))  # t really is ignored


@pytest.mark.parametrize("skip", ["concat", "add", "none"])
@pytest.mark.parametrize("norm", [None, "batch"])
@pytest.mark.parametrize("features,size", [((8, 16), 20), ((4, 8, 16), 32), ((4, 8, 16, 32), 48)])
def test_unet2015_same_padding_shapes(skip, norm, features, size):
    m = UNet2015(in_channels=2, out_channels=3, features=features, skip=skip, norm=norm)
    out = m(torch.randn(2, 2, size, size))
    assert out.shape == (2, 3, size, size)


def test_unet2015_paper_sizes_572_to_388():
    m = UNet2015.paper().to("meta")  # shapes only, no arithmetic
    assert m(torch.empty(1, 1, 572, 572, device="meta")).shape == (1, 2, 388, 388)
    assert m.output_size(572) == 388
    maps = m.feature_maps(torch.empty(1, 1, 572, 572, device="meta"))
    assert maps["enc0"].shape[-1] == 568 and maps["skip0"].shape[-1] == 392
    assert maps["bottleneck"].shape[1:] == (1024, 28, 28)


def test_unet2015_paper_parameter_count():
    # 31,030,658 for 2 output classes: the figure usually quoted for the 2015 network.
    assert count_parameters(UNet2015.paper().to("meta")) == 31_030_658


def test_unet2015_skip_variants_channel_counts():
    cat = UNet2015(features=(8, 16))
    add = UNet2015(features=(8, 16), skip="add")
    assert cat.decode[0][0].in_channels == 16 and add.decode[0][0].in_channels == 8


@pytest.mark.parametrize(
    "kwargs,size",
    [
        (dict(), 28),
        (dict(channel_mult=(1, 2), attention_levels=(0, 1), num_res_blocks=1), 16),
        (dict(num_classes=10, base_channels=16, norm_groups=8), 32),
        (dict(context_dim=12, attention_levels=(1, 2)), 28),
        (dict(time_conditioning=False), 28),
        (dict(skip="none", time_mode="add", dropout=0.1), 28),
        (dict(in_channels=3, out_channels=6, channel_mult=(1, 2, 2, 2)), 32),
    ],
)
def test_diffusion_unet_shapes(kwargs, size):
    m = DiffusionUNet(**kwargs)
    cin = kwargs.get("in_channels", 1)
    x = torch.randn(2, cin, size, size)
    extra = {}
    if kwargs.get("num_classes"):
        extra["y"] = torch.tensor([3, 10])  # a label and the null class
    if kwargs.get("context_dim"):
        extra["context"] = torch.randn(2, 5, kwargs["context_dim"])
    out = m(x, torch.tensor([0, 999]), **extra)
    assert out.shape == (2, kwargs.get("out_channels", 1), size, size)


def _all_params_get_gradients(model, loss):
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient reaches: {missing}"


def test_gradients_reach_every_parameter_diffusion():
    m = DiffusionUNet(base_channels=16, norm_groups=8, num_classes=3, context_dim=8, attention_levels=(1, 2))
    out = m(torch.randn(2, 1, 16, 16), torch.tensor([5, 500]), torch.tensor([0, 2]), torch.randn(2, 4, 8))
    _all_params_get_gradients(m, out.square().mean())


@pytest.mark.parametrize("model", [NaiveCNN(hidden=8), UNet2015(features=(4, 8, 16), norm="batch"),
                                   UNet2015(features=(4, 8), padding="valid", skip="add")])
def test_gradients_reach_every_parameter_unets(model):
    size = 44 if model.config.get("padding") == "valid" else 16
    _all_params_get_gradients(model, model(torch.randn(2, 1, size, size)).square().mean())


def test_time_conditioning_switch_removes_time_path():
    with_t = DiffusionUNet(base_channels=16, norm_groups=8)
    without = DiffusionUNet(base_channels=16, norm_groups=8, time_conditioning=False)
    assert without.time_embed is None and count_parameters(without) < count_parameters(with_t)
    x = torch.randn(1, 1, 16, 16)
    assert torch.equal(without(x, torch.tensor([1])), without(x, torch.tensor([900])))
    assert not torch.equal(with_t(x, torch.tensor([1])), with_t(x, torch.tensor([900])))


def test_build_model_round_trip():
    m = DiffusionUNet(base_channels=16, norm_groups=8, num_classes=10)
    twin = build_model("DiffusionUNet", m.config)
    assert twin.config == m.config and count_parameters(twin) == count_parameters(m)
