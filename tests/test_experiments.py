"""Shipped experiment runs: training, saving, loading, and the convergence test."""

import pytest
import torch
import torch.nn.functional as F

from tools import train_experiments
from unet_edu.models import NaiveCNN
from unet_edu.pretrained import experiments as ex
from unet_edu.train import History


def _loss(model, batch, generator):
    (x,) = batch
    return F.mse_loss(model(x + 0.5 * torch.randn(x.shape, generator=generator)), x)


TINY = ex.Experiment("tiny", {"a": lambda: NaiveCNN(depth=2, hidden=2),
                              "b": lambda: NaiveCNN(depth=3, hidden=2)},
                     data=lambda: torch.rand(32, 1, 8, 8), loss=_loss, steps=20,
                     batch_size=4, lr=1e-2, seeds=(0, 1))


def test_converged_measures_the_fall_over_the_last_fifth():
    flat = History(list(range(100)), [1.0] * 100)
    assert ex.converged(flat) == (True, 0.0)
    falling = History(list(range(100)), [1.0 - 0.005 * i for i in range(100)])
    ok, fall = ex.converged(falling)
    assert not ok and 0.1 < fall < 0.2  # about 0.075 / 0.6 of the last fifth's start
    with pytest.raises(ValueError, match="too short"):
        ex.converged(History([0, 1], [1.0, 1.0]))


def test_runs_round_trip_through_files(tmp_path):
    runs = ex.train_runs(TINY, device="cpu", progress=False)
    assert sorted(runs) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    for run in runs.values():
        assert run.record["steps"] == 20 and "converged" in run.record
        ex.save_run(run, root=tmp_path)
    loaded = ex.load_runs(TINY, device="cpu", root=tmp_path)
    for key, run in runs.items():
        got = loaded[key]
        assert got.record == run.record and got.history.losses == run.history.losses
        for p, q in zip(run.model.parameters(), got.model.parameters()):
            assert torch.equal(p, q)
    # Seeds differ, and the same seed trains the same weights again.
    assert not torch.equal(next(runs[("a", 0)].model.parameters()),
                           next(runs[("a", 1)].model.parameters()))
    again = ex.train_run(TINY, "a", 0, device="cpu", progress=False)
    assert torch.equal(next(again.model.parameters()), next(runs[("a", 0)].model.parameters()))


def test_a_loss_per_variant_and_a_subset_of_variants(tmp_path):
    def doubled(model, batch, generator):
        return 2 * _loss(model, batch, generator)

    exp = ex.Experiment("two-losses", dict(TINY.variants), data=TINY.data,
                        loss={"a": _loss, "b": doubled}, steps=5, batch_size=4, lr=1e-2,
                        seeds=(0,))
    assert exp.loss_for("a") is _loss and exp.loss_for("b") is doubled
    runs = ex.train_runs(exp, variants=["b"], device="cpu", progress=False)
    assert list(runs) == [("b", 0)]
    ex.save_run(runs[("b", 0)], root=tmp_path)
    assert list(ex.load_runs(exp, variants=["b"], device="cpu", root=tmp_path)) == [("b", 0)]
    with pytest.raises(FileNotFoundError):  # "a" was never trained
        ex.load_runs(exp, device="cpu", root=tmp_path)
    with pytest.raises(ValueError, match="has no variant 'c'; it has a, b"):
        ex.load_runs(exp, variants=["c"], root=tmp_path)
    with pytest.raises(ValueError, match="a loss per variant needs exactly"):
        ex.Experiment("x", {"a": None, "b": None}, None, {"a": _loss}, 1, 1, 1.0)


def test_the_noise_level_inputs():
    x0 = torch.zeros(500, 1, 4, 4)
    noisy, sigma = ex.noisy_digits(x0, torch.Generator().manual_seed(0))
    lo, hi = ex.SIGMA_RANGE
    assert sigma.shape == (500, 1, 1, 1) and lo <= sigma.min() and sigma.max() <= hi
    # log-uniform: the median sits at the geometric mean of the range
    assert abs(sigma.median().log() - 0.5 * (torch.tensor(lo * hi)).log()) < 0.25
    fixed, s = ex.noisy_digits(x0, torch.Generator().manual_seed(0), sigma=0.5)
    assert torch.all(s == 0.5) and abs(fixed.std() - 0.5) < 0.02
    both = ex.told_input(fixed, s)
    assert both.shape == (500, 2, 4, 4) and torch.all(both[:, 1] == 0.5)


def test_missing_runs_and_bad_names_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m tools.train_experiments tiny"):
        ex.load_runs(TINY, device="cpu", root=tmp_path)
    with pytest.raises(ValueError, match="unknown experiment 'nope'; known: cell-seg"):
        ex.load_runs("nope")
    with pytest.raises(ValueError, match="has no variant 'c'"):
        ex.train_run(TINY, "c", 0)
    with pytest.raises(ValueError, match="letters, digits and '-'"):
        ex.Experiment("x", {"a b": None}, None, None, 1, 1, 1.0)


def test_the_command_trains_saves_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(ex.EXPERIMENTS, "tiny", TINY)
    monkeypatch.setattr(train_experiments, "EXPERIMENTS", ex.EXPERIMENTS)
    status = train_experiments.main(["tiny", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "tiny").glob("*.safetensors")) == [
        "a--seed0.safetensors", "a--seed1.safetensors", "b--seed0.safetensors",
        "b--seed1.safetensors"]
    assert status in (0, 1) and out.count(" fall ") == 4
    assert train_experiments.main(["tiny", "--out", str(tmp_path / "one"), "--seeds", "1"]) in (0, 1)
    assert sorted(p.name for p in (tmp_path / "one" / "tiny").glob("*.safetensors")) == [
        "a--seed1.safetensors", "b--seed1.safetensors"]
    with pytest.raises(SystemExit):
        train_experiments.main(["tiny", "--seeds", "one"])
    assert train_experiments.main(["--list"]) == 0
    assert "digit-denoisers" in capsys.readouterr().out


def test_every_shipped_experiment_is_complete_and_converged():
    # The chapters load these by default: every run must be there, load, and have converged
    # (its training loss fell by less than 5% over the last fifth of the run), except the runs
    # an experiment declares unconverged, which must be exactly those that fail the test.
    for exp in ex.EXPERIMENTS.values():
        runs = ex.load_runs(exp, device="cpu")
        assert len(runs) == len(exp.variants) * len(exp.seeds)
        for run in runs.values():
            assert run.record["steps"] == exp.steps and len(run.history.losses) == exp.steps
            declared = (run.variant, run.seed) in exp.unconverged
            assert ex.converged(run.history)[0] != declared, (exp.name, run.variant, run.seed)
        assert set(exp.unconverged) <= set(runs), exp.name
