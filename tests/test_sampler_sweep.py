"""Scoring samplers (``metrics.evaluate_sampler``) and the DDIM-steps-vs-quality sweep."""

import json
from pathlib import Path

import pytest
import torch

from tools import sampler_sweep
from unet_edu.pretrained import sweep
from unet_edu.diffusion import NoiseSchedule
from unet_edu.metrics import (DigitClassifier, evaluate_sampler, frechet_distance,
                              frechet_distance_spread, within_class_variety)
from unet_edu.models import DiffusionUNet

BENCH = Path(__file__).resolve().parents[1] / "book" / "_static" / "bench"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = DiffusionUNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,),
                          num_classes=10, norm_groups=4, num_timesteps=20).eval()
    classifier = DigitClassifier(width=8, feature_dim=16).eval()
    return model, NoiseSchedule("cosine", 20), classifier


def test_evaluate_sampler_is_reproducible_and_complete(tiny):
    model, schedule, clf = tiny
    real = torch.randn(30, 16, dtype=torch.float64)
    a = evaluate_sampler(model, schedule, clf, real, sampler="ddim", steps=4, n=30, batch_size=12)
    b = evaluate_sampler(model, schedule, clf, real, sampler="ddim", steps=4, n=30, batch_size=12)
    assert a.fd == b.fd and a.label_accuracy == b.label_accuracy
    assert a.fd > 0 and 0.0 <= a.label_accuracy <= 1.0 and a.seconds > 0
    assert a.fd_sd > 0 and a.variety > 0 and a.fd_sd == b.fd_sd
    assert (a.sampler, a.steps, a.n, a.guidance_scale, a.spacing) == ("ddim", 4, 30, 2.0, "trailing")
    linspace = evaluate_sampler(model, schedule, clf, real, steps=4, n=30, spacing="linspace")
    assert linspace.spacing == "linspace" and linspace.fd != a.fd
    other_seed = evaluate_sampler(model, schedule, clf, real, sampler="ddim", steps=4, n=30, seed=3)
    assert other_seed.fd != a.fd
    ddpm = evaluate_sampler(model, schedule, clf, real, sampler="ddpm", steps=999, n=10)
    assert ddpm.steps == 20  # DDPM always walks the whole schedule


def test_evaluate_sampler_rejects_bad_arguments(tiny):
    model, schedule, clf = tiny
    real = torch.randn(10, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="'ddim' or 'ddpm'"):
        evaluate_sampler(model, schedule, clf, real, sampler="euler", n=10)
    with pytest.raises(ValueError, match="at least 2"):
        evaluate_sampler(model, schedule, clf, real, n=1)


def test_fd_spread_and_variety_measure_what_they_say():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 8, generator=g, dtype=torch.float64)
    fake = torch.randn(400, 8, generator=g, dtype=torch.float64) + 0.3
    spread = frechet_distance_spread(fake, real, resamples=50)
    # Four times fewer samples: a noisier estimate (about twice the spread).
    assert frechet_distance_spread(fake[:100], real, resamples=50) > 1.5 * spread > 0
    assert frechet_distance(fake, real) > 4 * spread  # a real shift stands out of the noise
    labels = torch.arange(400) % 4
    # Pairs of independent 8-d standard normals are sqrt(2 * 8) = 4 apart on average, roughly.
    assert 3.5 < within_class_variety(real, labels) < 4.2
    same = real.clone()
    same[labels == 0] = real[0]  # class 0 collapsed to one image
    assert within_class_variety(same, labels) < 0.8 * within_class_variety(real, labels)
    with pytest.raises(ValueError, match="at least two images"):
        within_class_variety(real[:3], torch.arange(3))


def test_sweep_end_to_end_on_a_tiny_model(tiny, tmp_path, monkeypatch):
    model, schedule, clf = tiny
    res = sampler_sweep.run_sweep(n=20, ddim_steps=(2, 5), other_spacings=("linspace",),
                                  other_steps=(2,), model=model, schedule=schedule,
                                  classifier=clf, progress=False)
    assert [(r["sampler"], r["steps"], r["spacing"]) for r in res["rows"]] == [
        ("ddpm", 20, None), ("ddim", 2, "trailing"), ("ddim", 5, "trailing"),
        ("ddim", 2, "linspace")]
    assert res["meta"]["n"] == 20 and res["meta"]["real_floor_fd"] > 0
    assert res["meta"]["real_floor_fd_sd"] > 0 and res["meta"]["real_variety"] > 0
    path = tmp_path / "q.json"
    path.write_text(json.dumps(res))
    sampler_sweep.main(["--from-json", str(path), "--markdown", str(tmp_path / "q.md"),
                        "--plot", str(tmp_path / "q.png")])
    table = (tmp_path / "q.md").read_text()
    assert "| DDPM | – | – | 20 |" in table and "| DDIM | trailing | 0 | 5 |" in table
    assert "| DDIM | linspace | 0 | 2 |" in table and "floor" in table and " ± " in table
    assert (tmp_path / "q.png").stat().st_size > 1000
    # Only DDIM's settings change: the DDPM row is carried over, not sampled again.
    again = sampler_sweep.run_sweep(n=20, ddim_steps=(3,), reuse_ddpm=path, model=model,
                                    schedule=schedule, classifier=clf, progress=False)
    assert again["rows"][0] == dict(res["rows"][0], reused_from=res["meta"]["date"],
                                    sampled_on_cpu=res["meta"]["machine"]["cpu"])
    # Reused again, it keeps the day it was sampled; on another processor the table says so.
    path.write_text(json.dumps(dict(again, meta=dict(again["meta"], date="2099-01-01"))))
    third = sampler_sweep.run_sweep(n=20, ddim_steps=(3,), reuse_ddpm=path, model=model,
                                    schedule=schedule, classifier=clf, progress=False)
    assert third["rows"][0]["reused_from"] == res["meta"]["date"]
    third["rows"][0]["sampled_on_cpu"] = "Another CPU"
    assert f"DDPM (sampled {res['meta']['date']} on Another CPU)" in sweep.markdown_table(third)
    path.write_text(json.dumps(res))
    with pytest.raises(ValueError, match="run without --reuse-ddpm"):
        sampler_sweep.run_sweep(n=19, ddim_steps=(3,), reuse_ddpm=path, model=model,
                                schedule=schedule, classifier=clf, progress=False)
    with pytest.raises(ValueError, match="use 2 <= n <= 500"):
        sampler_sweep.run_sweep(n=501, model=model, schedule=schedule, classifier=clf)


def test_guidance_sweep_reports_variety(tiny, tmp_path):
    model, schedule, clf = tiny
    res = sampler_sweep.run_sweep(n=20, ddim_steps=(3,), ddpm=False, guidance_scales=(0, 1, 4),
                                  model=model, schedule=schedule, classifier=clf, progress=False)
    assert [r["guidance_scale"] for r in res["rows"]] == [0.0, 1.0, 4.0]
    table = sweep.markdown_table(res)
    assert "| 4 | 3 |" in table and "within-class variety" in table and "real digits" in table
    path = tmp_path / "g.json"
    path.write_text(json.dumps(res))
    sampler_sweep.main(["--from-json", str(path), "--plot", str(tmp_path / "g.png")])
    assert (tmp_path / "g.png").stat().st_size > 1000


def test_fewest_steps_within_factor():
    rows = [dict(sampler="ddpm", steps=1000, fd=10.0), dict(sampler="ddim", steps=5, fd=40.0),
            dict(sampler="ddim", steps=10, fd=14.9), dict(sampler="ddim", steps=20, fd=12.0)]
    res = {"rows": rows}
    assert sampler_sweep.fewest_steps_within(res, 1.5) == 10
    assert sampler_sweep.fewest_steps_within(res, 1.1) is None
    assert sampler_sweep.fewest_steps_within({"rows": rows[1:]}) is None


def test_committed_sweep_table_is_generated_from_the_shipped_results():
    # The appendix includes quality-cpu.md: it must be what the script renders from the results
    # stored with the shipped model, and those must belong to the model that ships now.
    from unet_edu.pretrained import load

    res = sweep.shipped_results()
    assert (BENCH / "quality-cpu.md").read_text() == sweep.markdown_table(res)
    assert (BENCH / "quality-cpu.png").exists()
    assert res["meta"]["model"]["training_steps"] == load("digits-ddpm", device="cpu").info.step
    assert any(r["sampler"] == "ddpm" for r in res["rows"]) and res["meta"]["n"] >= 500
    # Chapter 5 reads the trailing rows with their spreads, and the other spacings at 5-20 steps.
    assert res["meta"]["spacing"] == "trailing"
    spaced = {(r["steps"], r["spacing"]) for r in res["rows"] if r["sampler"] == "ddim"}
    assert {(s, sp) for s in (5, 10, 20) for sp in ("trailing", "linspace", "leading")} <= spaced
    assert all(r["fd_sd"] > 0 for r in res["rows"] if r["sampler"] == "ddim")


def test_committed_guidance_sweep_belongs_to_the_shipped_model():
    from unet_edu.pretrained import load

    res = sweep.shipped_results("guidance")
    assert res["meta"]["model"]["training_steps"] == load("digits-ddpm", device="cpu").info.step
    assert [r["guidance_scale"] for r in res["rows"]] == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert res["meta"]["n"] >= 500 and res["meta"]["real_variety"] > 0
    assert all(r["variety"] > 0 and r["fd_sd"] > 0 for r in res["rows"])


def test_eta_rows_are_swept_and_the_rest_reused(tiny, tmp_path):
    model, schedule, clf = tiny
    kw = dict(n=20, ddim_steps=(2,), model=model, schedule=schedule, classifier=clf,
              progress=False)
    res = sampler_sweep.run_sweep(ddpm=False, **kw)
    path = tmp_path / "base.json"
    path.write_text(json.dumps(res))
    more = sampler_sweep.run_sweep(ddpm=False, etas=(1.0,), eta_steps=(2, 3), reuse=path, **kw)
    keys = [(r["sampler"], r["steps"], sweep.eta_of(r)) for r in more["rows"]]
    assert keys == [("ddim", 2, 0.0), ("ddim", 2, 1.0), ("ddim", 3, 1.0)]
    first = more["rows"][0]
    assert first["sampled_on"] == res["meta"]["date"] and first["fd"] == res["rows"][0]["fd"]
    noisy = more["rows"][1]
    assert "sampled_on" not in noisy and noisy["fd"] != first["fd"]  # eta = 1 draws other images
    assert noisy["fd_sd_with_real"] > noisy["fd_sd"] > 0  # the real set's luck adds spread
    table = sweep.markdown_table(more)
    assert "| DDIM | trailing | 0 | 2 |" in table and "| DDIM | trailing | 1 | 3 |" in table
    assert "sd, real redrawn" in table
    assert f" | {noisy['fd_sd_with_real']:.2f} | " in table
    # Only eta = 0 rows answer "how few steps" (no DDPM row here, so there is no answer).
    assert sweep.fewest_steps_within(more) is None
    rows = [dict(sampler="ddpm", steps=20, fd=1.0, guidance_scale=2.0),
            dict(sampler="ddim", steps=2, fd=5.0, eta=0.0, guidance_scale=2.0),
            dict(sampler="ddim", steps=2, fd=1.2, eta=1.0, guidance_scale=2.0)]
    assert sweep.fewest_steps_within({"rows": rows}) is None
    assert sweep.fewest_steps_within({"rows": rows}, eta=1.0) == 2
    ax = sweep.plot_sweep(dict(more, rows=rows, meta=more["meta"]))
    assert any("η = 1" in t.get_text() for t in ax.get_legend().get_texts())
    with pytest.raises(ValueError, match="run without --reuse"):
        sampler_sweep.run_sweep(ddpm=False, reuse=path, **dict(kw, n=21))
    with pytest.raises(SystemExit):
        sampler_sweep.main(["--etas", "2", "--no-ddpm"])


def test_rows_carried_over_are_counted_with_their_day_in_the_header():
    row = dict(sampler="ddim", steps=10, n=4, guidance_scale=2.0, fd=3.0, label_accuracy=0.9,
               seconds=1.0, spacing="trailing", eta=0.0)
    meta = dict(n=4, device="cpu", machine={"cpu": "CPU A"}, threads=2, torch="x",
                date="2026-12-06", guidance_scale=2.0, spacing="trailing",
                real_floor_fd=0.5, real_floor_fd_sd=0.1)
    rows = [dict(row, sampled_on="2026-12-05", sampled_on_cpu="CPU A"),
            dict(row, steps=20, sampled_on="2026-12-05", sampled_on_cpu="CPU A"),
            dict(row, steps=50, sampled_on="2026-11-22", sampled_on_cpu="CPU B"),
            dict(row, steps=100)]
    header = sweep.markdown_table({"meta": meta, "rows": rows}).splitlines()[0]
    assert "2 rows carried over from the run of 2026-12-05." in header
    assert "1 row carried over from the run of 2026-11-22 (on CPU B)." in header
