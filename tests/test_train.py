import json

import pytest
import torch

from unet_edu.diffusion import NoiseSchedule, diffusion_loss
from unet_edu.models import DiffusionUNet, UNet2015
from unet_edu.train import fit, load_checkpoint, save_checkpoint


def _model():
    torch.manual_seed(0)
    return DiffusionUNet(base_channels=8, channel_mult=(1, 2), norm_groups=4, num_heads=2, num_classes=3,
                         dropout=0.1, num_timesteps=100)


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 3, (32,), generator=g)


SCHEDULE = NoiseSchedule("linear", 100)


def _loss(model, batch, gen):
    x, y = batch
    return diffusion_loss(model, SCHEDULE, x, y, generator=gen)


def test_fit_reduces_loss_and_records_history():
    m = _model()
    hist = fit(m, _loss, _data(), steps=40, batch_size=16, lr=3e-3, progress=False)
    assert hist.steps == list(range(1, 41))
    assert sum(hist.losses[-10:]) < sum(hist.losses[:10])


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    m = _model()
    path = save_checkpoint(tmp_path / "m.safetensors", m, extra={"note": "test"})
    twin, info = load_checkpoint(path)
    assert info.model == "DiffusionUNet" and info.config == m.config and info.extra == {"note": "test"}
    for (k, a), (_, b) in zip(m.state_dict().items(), twin.state_dict().items()):
        assert torch.equal(a, b), k
    assert json.loads((tmp_path / "m.safetensors.json").read_text())["config"] == m.config
    # no temp files left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "m.safetensors.json"]


def test_resume_equals_uninterrupted_run(tmp_path):
    full = _model()
    h_full = fit(full, _loss, _data(), steps=12, batch_size=8, progress=False, seed=5)

    part = _model()
    ck = tmp_path / "run.safetensors"
    fit(part, _loss, _data(), steps=6, batch_size=8, progress=False, seed=5, checkpoint=ck)
    torch.manual_seed(123)  # disturb the global RNG: resume must restore it
    resumed = _model()
    h_res = fit(resumed, _loss, _data(), steps=12, batch_size=8, progress=False, seed=5, checkpoint=ck, resume=True)
    assert h_res.losses == h_full.losses
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k


def test_config_mismatch_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", _model())
    other = DiffusionUNet(base_channels=16, channel_mult=(1, 2), norm_groups=4, num_heads=2, num_classes=3,
                          dropout=0.1, num_timesteps=100)
    with pytest.raises(ValueError, match=r"different DiffusionUNet configuration \(base_channels: checkpoint 8 vs model 16\)"):
        load_checkpoint(path, other)
    with pytest.raises(ValueError, match=r"holds a DiffusionUNet, not a UNet2015"):
        load_checkpoint(path, UNet2015(features=(4, 8)))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    m = _model()
    path = save_checkpoint(tmp_path / "m.safetensors", m, step=1)
    before = path.read_bytes()
    import unet_edu.checkpoints as checkpoints

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoints, "save_file", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, m, step=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "m.safetensors.json"]


def test_live_loss_plot_records_every_step_and_redraws_in_place(monkeypatch):
    import IPython
    import IPython.display

    from unet_edu.viz import LiveLossPlot

    drawn = []

    class Handle:
        def update(self, frame):
            drawn.append(("update", live.history.steps[-1], frame.data[:4]))

    def fake_display(frame, display_id=False):
        drawn.append(("display", live.history.steps[-1], frame.data[:4]))
        return Handle()

    class Kernel:  # what IPython.get_ipython() returns inside a notebook has a .kernel
        kernel = object()

    monkeypatch.setattr(IPython, "get_ipython", lambda: Kernel())
    monkeypatch.setattr(IPython.display, "display", fake_display)
    live = LiveLossPlot(every=4, total=10)
    history = fit(_model(), _loss, _data(), steps=10, batch_size=8, lr=1e-3, seed=0, progress=False,
                  callback=live)
    assert live.history.steps == history.steps and live.history.losses == pytest.approx(history.losses)
    # drawn at steps 4 and 8 and at the last step; one output, then updated in place
    png = b"\x89PNG"
    assert drawn == [("display", 4, png), ("update", 8, png), ("update", 10, png)]


def test_live_loss_plot_outside_a_notebook_only_records():
    from unet_edu.viz import LiveLossPlot

    live = LiveLossPlot(every=1)
    live(1, 0.5)
    live(2, 0.25)
    assert live.history.losses == [0.5, 0.25]
    with pytest.raises(ValueError, match="at least 1"):
        LiveLossPlot(every=0)


def test_bf16_and_channels_last_train_and_keep_float32_weights(tmp_path):
    m = _model()
    ref = fit(_model(), _loss, _data(), steps=40, batch_size=16, lr=3e-3, progress=False)
    hist = fit(m, _loss, _data(), steps=40, batch_size=16, lr=3e-3, progress=False,
               precision="bf16", channels_last=True, checkpoint=tmp_path / "cl.safetensors")
    assert sum(hist.losses[-10:]) < sum(hist.losses[:10])
    assert hist.losses != ref.losses  # the autocast really ran in bf16
    assert abs(sum(hist.losses[-10:]) - sum(ref.losses[-10:])) < 0.25 * sum(ref.losses[-10:])
    assert all(p.dtype == torch.float32 for p in m.parameters())
    fresh = _model()
    load_checkpoint(tmp_path / "cl.safetensors", fresh)  # NHWC weights saved as plain tensors
    for a, b in zip(fresh.parameters(), m.parameters()):
        assert torch.equal(a, b)


def test_bf16_attention_on_the_cpu_runs_its_softmax_in_float32():
    from unet_edu.blocks import SelfAttention

    torch.manual_seed(0)
    att = SelfAttention(16, num_heads=2, norm_groups=4)
    x = torch.randn(2, 16, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = att(x)
    torch.testing.assert_close(out.float(), att(x), rtol=0.05, atol=0.05)


def test_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match="'fp32'.*'bf16'"):
        fit(_model(), _loss, _data(), steps=1, precision="fp16", progress=False)


def test_compile_trains_through_the_compiled_module(monkeypatch):
    # The real torch.compile is exercised in test_arch_models; here: that fit hands the compiled
    # module to the loss and that training still updates the caller's model.
    compiled = []

    def fake_compile(model):
        class Compiled(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner, self.calls = model, 0

            def forward(self, x):
                self.calls += 1
                return self.inner(x)

        compiled.append(Compiled())
        return compiled[-1]

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    before = model.weight.detach().clone()
    fit(model, lambda net, batch, gen: net(batch[0]).pow(2).mean(), torch.randn(8, 1, 4, 4),
        steps=3, batch_size=4, compile=True, progress=False)
    assert compiled and compiled[0].calls == 3
    assert not torch.equal(model.weight, before)


def test_checkpoint_blocks_saves_memory_and_keeps_gradients():
    from unet_edu.blocks import ResBlock
    from unet_edu.exercises.chapter6 import activation_bytes
    from unet_edu.models import DiffusionUNet
    from unet_edu.train import checkpoint_blocks

    torch.manual_seed(0)
    net = DiffusionUNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, norm_groups=4,
                        attention_levels=(), num_timesteps=10)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1, 5])
    plain_bytes = activation_bytes(net, x, t)
    net(x, t).square().sum().backward()
    plain = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    blocks = sum(isinstance(m, ResBlock) for m in net.modules())
    assert checkpoint_blocks(net, ResBlock) == blocks > 0
    assert checkpoint_blocks(net, ResBlock) == 0  # already wrapped: nothing more to do
    assert activation_bytes(net, x, t) < 0.7 * plain_bytes
    net(x, t).square().sum().backward()
    for a, p in zip(plain, net.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6)
    with pytest.raises(ValueError, match="has no Linear"):
        checkpoint_blocks(ResBlock(4, 4, None, norm_groups=2), torch.nn.Linear)


def test_zero_module_makes_an_added_branch_a_no_op_that_still_learns():
    from unet_edu.blocks import zero_module

    torch.manual_seed(0)
    base, branch = torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.Conv2d(1, 4, 3, padding=1)
    join = zero_module(torch.nn.Conv2d(4, 1, 1))
    x = torch.randn(2, 1, 6, 6)
    out = base(x) + join(branch(x))
    assert torch.equal(out, base(x))
    out.sum().backward()
    assert join.weight.grad.abs().sum() > 0  # the join learns ...
    assert branch.weight.grad.abs().sum() == 0  # ... the branch only once the join is non-zero


def test_lr_drop_divides_the_learning_rate_by_ten_from_its_step_on():
    import pytest
    import torch.nn.functional as F
    from unet_edu.models import NaiveCNN

    def loss(m, batch, g):
        (x,) = batch
        return F.mse_loss(m(x), x)

    # Compare a run with the drop half-way against constant-rate runs, step by step.
    x = torch.rand(16, 1, 8, 8)
    runs = {}
    for name, kw in [("drop", dict(lr=1e-2, lr_drop_at=0.5)), ("high", dict(lr=1e-2))]:
        torch.manual_seed(0)
        m = NaiveCNN(depth=2, hidden=2)
        runs[name] = fit(m, loss, x, steps=10, batch_size=4, seed=0, progress=False, **kw)
    # Up to the drop (5 updates, so the first 6 losses) the runs are identical; then not.
    assert runs["drop"].losses[:6] == runs["high"].losses[:6]
    assert runs["drop"].losses[6:] != runs["high"].losses[6:]
    with pytest.raises(ValueError, match="between 0 and 1"):
        fit(NaiveCNN(depth=2, hidden=2), loss, x, steps=2, lr_drop_at=1.5, progress=False)
