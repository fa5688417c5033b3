"""Interventions on a sampler: the time switch, resuming a DDIM run, FD intervals."""

import math

import numpy as np
import pytest
import torch

from unet_edu.diffusion import NoiseSchedule, ddim_sample
from unet_edu.interventions import TimeSwitch, ddim_resume, fd_comparison, fd_interval
from unet_edu.metrics import frechet_distance
from unet_edu.models import DiffusionUNet

SMALL = dict(base_channels=8, channel_mult=(1, 2), norm_groups=4, num_heads=2, num_timesteps=50)


@pytest.fixture
def pair():
    torch.manual_seed(0)
    told = DiffusionUNet(**SMALL).eval()
    torch.manual_seed(1)
    blind = DiffusionUNet(**SMALL, time_conditioning=False).eval()
    return told, blind


def _sample(model, schedule, steps=5):
    return ddim_sample(model, schedule, (3, 1, 8, 8), steps=steps, progress=False,
                       generator=torch.Generator().manual_seed(0), return_trajectory=True)


def test_switch_sends_each_image_to_the_network_of_its_t(pair):
    told, blind = pair
    switch = TimeSwitch(told, blind, (10, 19))
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([5, 10, 19, 20])
    with torch.no_grad():
        out = switch(x, t)
        want = torch.cat([told(x[:1], t[:1]), blind(x[1:3], t[1:3]), told(x[3:], t[3:])])
        assert torch.allclose(out, want, atol=1e-6)
        assert torch.equal(switch(x, torch.tensor(12)), blind(x, torch.full((4,), 12)))
    assert switch.config["num_timesteps"] == 50 and switch.config["time_conditioning"]


def test_switch_inside_a_sampler_changes_only_the_window(pair):
    told, blind = pair
    s = NoiseSchedule("cosine", 50)
    ts = _sample(told, s).timesteps  # 49, 39, 29, 19, 9
    everywhere = TimeSwitch(told, blind, (0, 49))
    nowhere = TimeSwitch(told, blind, (ts[1] + 1, ts[0] - 1))  # visited by no step
    assert torch.equal(_sample(everywhere, s).x, _sample(blind, s).x)
    assert torch.equal(_sample(nowhere, s).x, _sample(told, s).x)
    first = _sample(TimeSwitch(told, blind, (ts[0], ts[0])), s)
    assert torch.equal(first.eps_pred[0], _sample(blind, s).eps_pred[0])
    assert torch.equal(first.eps_pred[1], told(first.xt[1], torch.full((3,), ts[1])))


def test_switch_refuses_bad_windows_and_networks(pair):
    told, blind = pair
    with pytest.raises(ValueError, match="runs backwards"):
        TimeSwitch(told, blind, (900, 100))
    with pytest.raises(ValueError, match="two timesteps"):
        TimeSwitch(told, blind, 900)
    with pytest.raises(ValueError, match="whole timesteps"):
        TimeSwitch(told, blind, (0.5, 10))
    with pytest.raises(ValueError, match="must be a network"):
        TimeSwitch(told, "blind", (0, 10))
    other = DiffusionUNet(**SMALL, num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        TimeSwitch(told, other, (0, 10))


def test_resume_reproduces_a_switched_run_exactly(pair):
    told, blind = pair
    s = NoiseSchedule("cosine", 50)
    run = _sample(told, s)
    t = run.timesteps[2]
    resumed = ddim_resume(blind, s, run, t)
    direct = _sample(TimeSwitch(told, blind, (0, t)), s)
    assert torch.allclose(resumed.x, direct.x, atol=1e-6)
    assert resumed.timesteps == run.timesteps[2:]
    # Resuming with the run's own model gives the run itself.
    assert torch.allclose(ddim_resume(told, s, run, t).x, run.x, atol=1e-6)


def test_resume_refuses_what_it_cannot_continue(pair):
    told, _ = pair
    s = NoiseSchedule("cosine", 50)
    run = _sample(told, s)
    with pytest.raises(ValueError, match="never visited t = 30"):
        ddim_resume(told, s, run, 30)
    plain = ddim_sample(told, s, (2, 1, 8, 8), steps=5, progress=False)
    with pytest.raises(ValueError, match="return_trajectory=True"):
        ddim_resume(told, s, plain, 49)


def _feats(shift, seed, n=120, d=4):
    g = np.random.default_rng(seed)
    return g.normal(size=(n, d)) + shift


def test_fd_interval_matches_frechet_distance_and_covers_both_sets():
    ref = _feats(0.0, 99)
    seeds = [_feats(1.0, k) for k in range(3)]
    r = fd_interval(seeds, ref, n_boot=100)
    per_seed = [frechet_distance(torch.as_tensor(f), torch.as_tensor(ref)) for f in seeds]
    assert np.allclose(r.per_seed, per_seed, rtol=1e-8)
    assert r.mean == pytest.approx(np.mean(per_seed))
    assert r.low < r.mean < r.high and r.se_items > 0 and r.se_seed > 0
    # Identical seeds: the whole interval comes from the finite sample and reference sets.
    same = fd_interval([seeds[0]] * 3, ref, n_boot=100)
    assert same.se_seed == 0 and same.high - same.low > 0
    assert "3 seeds x 120 samples, 120 reference digits" in same.describe()


def test_fd_comparison_verdicts():
    ref = _feats(0.0, 99)
    near = [_feats(0.5, k) for k in range(3)]
    far = [_feats(2.0, 10 + k) for k in range(3)]
    apart = fd_comparison(near, far, ref, n_boot=100)
    assert apart.verdict == "apart" and apart.effect > 5 and apart.low > 1
    itself = fd_comparison(near, near, ref, n_boot=100, margin=0.05)
    assert itself.effect == pytest.approx(1.0) and itself.verdict == "equivalent"
    similar = [_feats(0.5, 20 + k) for k in range(3)]
    unresolved = fd_comparison(near, similar, ref, n_boot=100)
    assert unresolved.verdict == "not resolved"
    diff = fd_comparison(near, far, ref, n_boot=100, relative=False)
    assert diff.effect == pytest.approx(np.mean(fd_interval(far, ref, n_boot=2).per_seed)
                                        - np.mean(fd_interval(near, ref, n_boot=2).per_seed))


def test_fd_functions_refuse_bad_input():
    ref = _feats(0.0, 99)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        fd_interval([_feats(1.0, 0)], ref)
    with pytest.raises(ValueError, match="same number of samples"):
        fd_interval([_feats(1.0, 0), _feats(1.0, 1, n=50)], ref)
    bad = _feats(1.0, 0)
    bad[3, 1] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        fd_interval([bad, _feats(1.0, 1)], ref)
    with pytest.raises(ValueError, match="same seeds and sample counts"):
        fd_comparison([_feats(1, 0), _feats(1, 1)], [_feats(1, k) for k in range(3)], ref)
    with pytest.raises(ValueError, match="margin"):
        fd_comparison([_feats(1, 0), _feats(1, 1)], [_feats(1, 2), _feats(1, 3)], ref,
                      margin=-1)
