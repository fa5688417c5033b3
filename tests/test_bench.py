"""The speed benchmark: matched models, an end-to-end run on a tiny configuration, the page's table.

The peers (diffusers, denoising-diffusion-pytorch) are optional: without them the benchmark runs
our model alone and says what it skipped.  Nothing here is timed.
"""

import json
from pathlib import Path

import pytest
import torch

from tools import bench
from unet_edu.models import count_parameters

ROOT = Path(__file__).resolve().parents[1]
RESULTS = sorted((ROOT / "book" / "_static" / "bench").glob("results-*.json"))
PEERS = [p for p in bench.PEERS if bench.peer_available(p)]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine may be busy: one thread avoids waiting on a second
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("config", list(bench.CONFIGS))
def test_ours_matches_the_diffusers_layout_exactly(config):
    # Same layout as diffusers' UNet2DModel: 1,707,009 parameters for the course's MNIST model.
    with torch.device("meta"):
        n = count_parameters(bench.build("ours", config))
    expected = {"mnist28": 1_707_009, "rgb32": 18_536_323, "tiny": 176_849}[config]
    assert n == expected
    if "ours_heads8" in bench.CONFIGS[config]:  # more heads, same weights
        with torch.device("meta"):
            assert count_parameters(bench.build("ours_heads8", config)) == expected


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("config", list(bench.CONFIGS))
def test_peers_are_matched_within_five_percent(config, peer):
    with torch.device("meta"):
        ours = count_parameters(bench.build("ours", config))
        theirs = count_parameters(bench.build(peer, config))
    assert abs(theirs / ours - 1) <= 0.05, (config, peer, ours, theirs)


@pytest.mark.parametrize("peer", PEERS)
def test_peer_adapters_predict_noise_of_the_input_shape(peer):
    model = bench.build(peer, "tiny")
    x = torch.randn(2, 1, 8, 8)
    assert model(x, torch.tensor([3, 900])).shape == x.shape


def test_benchmark_end_to_end_on_tiny_config(tmp_path, one_thread):
    out, md, png = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png"
    bench.main(["--device", "cpu", "--configs", "tiny", "--quick", "--repeats", "1", "--threads", "1",
                "--out", str(out), "--markdown", str(md), "--plot", str(png)])
    res = json.loads(out.read_text())
    models = res["configs"]["tiny"]["models"]
    assert set(models) == {"ours", *PEERS}
    for rec in models.values():
        assert rec["train_images_per_s"] > 0 and rec["infer_images_per_s"] > 0
        assert rec["sample_s_64x50"] > 0 and rec["train_images_per_cpu_s"] > 0
    assert res["meta"]["ratio_basis"] == "cpu"  # one thread: CPU time is the fair clock
    assert res["configs"]["tiny"]["sampling"]["scaled"] is True  # the CPU run times a slice and says so
    assert set(res["configs"]["tiny"]["ratios"]) == set(PEERS)
    for peer in set(bench.PEERS) - set(PEERS):
        assert "not installed" in res["skipped"][peer]
    table = md.read_text()
    assert "unet_edu DiffusionUNet" in table and "176,849" in table
    assert png.stat().st_size > 1000


def test_missing_peer_is_skipped_with_a_message(monkeypatch, one_thread, capsys):
    monkeypatch.setattr(bench.configs, "peer_available", lambda name: False)
    res = bench.run_benchmark(configs=("tiny",), models=("ours", "diffusers"), repeats=1, quick=True,
                              memory="off")
    assert "pip install -r requirements-bench.txt" in res["skipped"]["diffusers"]
    assert list(res["configs"]["tiny"]["models"]) == ["ours"]
    assert res["configs"]["tiny"]["ratios"] == {}
    assert "diffusers skipped" in capsys.readouterr().out


def test_ratios_mean_ours_is_better_above_one():
    models = {
        "ours": dict(parameters=100, train_images_per_s=20.0, infer_images_per_s=50.0,
                     sample_s_64x50=10.0, peak_train_bytes=100),
        "diffusers": dict(parameters=101, train_images_per_s=10.0, infer_images_per_s=100.0,
                          sample_s_64x50=20.0, peak_train_bytes=50),
    }
    r = bench.ratios(models)["diffusers"]
    assert r == dict(parameters=1.01, train=2.0, inference=0.5, sampling=2.0, memory=0.5)
    # On a single-threaded CPU run the ratios compare CPU time (immune to other programs).
    models["ours"] |= dict(train_images_per_cpu_s=30.0, infer_images_per_cpu_s=60.0, sample_cpu_s_64x50=4.0)
    models["diffusers"] |= dict(train_images_per_cpu_s=10.0, infer_images_per_cpu_s=60.0,
                                sample_cpu_s_64x50=5.0)
    r = bench.ratios(models, "cpu")["diffusers"]
    assert r == dict(parameters=1.01, train=3.0, inference=1.0, sampling=1.25, memory=0.5)


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_committed_table_is_generated_from_the_committed_results(path):
    # The appendix page includes the .md file: it must be exactly what the script renders.
    res = json.loads(path.read_text())
    assert (path.with_suffix(".md")).read_text() == bench.markdown_table(res)
    for config in ("mnist28", "rgb32"):
        assert config in res["configs"]


def test_flop_count_includes_the_cpu_attention_kernel():
    from torch.utils.flop_counter import FlopCounterMode

    from tools.bench.measure import _CPU_ATTENTION

    q = torch.randn(2, 4, 16, 8, requires_grad=True)
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()
    product = 2 * 2 * 4 * 16 * 16 * 8  # one (16 x 8) @ (8 x 16) per head; multiply-add = 2
    # forward: q k^T and (softmax) v; backward: q k^T again, then dV, dP, dQ and dK
    assert counter.get_total_flops() == 7 * product


def test_full_run_reports_flops_and_the_gemm_peak(tmp_path, one_thread):
    res = bench.run_benchmark(configs=("tiny",), models=("ours",), repeats=1, memory="off",
                              sample_images=1, sample_steps=1, log=lambda *a: None)
    rec = res["configs"]["tiny"]["models"]["ours"]
    assert rec["train_flop"] > 1e7 and rec["train_flop_per_s"] > 0
    assert res["meta"]["matmul_flop_per_s"]["float32"] > 1e9
    table = bench.markdown_table(res)
    assert "GFLOP/s" in table
    if len(bench.configs.cpu_variants()) > 1:  # a CPU with native bf16: both rows, one verdict
        assert set(res["configs"]["tiny"]["models"]) == {"ours", "ours/bf16"}


def test_precision_study_trains_both_precisions_and_reports_mean_and_sd(monkeypatch, one_thread):
    from tools.bench import precision

    def tiny():
        return bench.build("ours", "tiny")

    monkeypatch.setitem(precision.MODELS, "tiny", ("tiny network", tiny))
    monkeypatch.setattr(precision, "mnist", lambda split: _small_digits())
    res = precision.run(models=("tiny",), seeds=(0, 1), steps=10, batch=4, log=lambda *a: None)
    s = precision.summary(res)["tiny"]
    assert s["speedup"] > 0 and all(v > 0 for v in s["images_per_s"].values())
    for mean, sd in s["loss"].values():
        assert 0 < mean < 10 and sd >= 0
    c = s["comparison"]  # the seed-by-seed ratio bf16/fp32, with its verdict
    assert c.relative and c.margin == precision.MARGIN and c.low <= c.effect <= c.high
    assert c.verdict in ("apart", "equivalent", "not resolved")
    table = precision.markdown_table(res)
    assert "| tiny network | bf16 | 2 |" in table and "±" in table


def _small_digits():
    from unet_edu.data import Digits

    g = torch.Generator().manual_seed(0)
    images = torch.nn.functional.interpolate(torch.rand(16, 1, 28, 28, generator=g), size=8)
    return Digits(images, torch.randint(0, 10, (16,), generator=g), "random")


@pytest.fixture
def tiny_with_eight_heads(monkeypatch):
    config = dict(bench.CONFIGS["tiny"])
    config["ours_heads8"] = dict(config["ours"], num_heads=8)
    monkeypatch.setitem(bench.CONFIGS, "tiny", config)


def test_attention_study_bounds_the_step_without_the_attention_core(
        tiny_with_eight_heads, one_thread):
    import unet_edu.blocks as blocks
    from tools.bench import attention

    keep = blocks._attend
    res = attention.run("tiny", repeats=1, inner=1, log=lambda *a: None)
    assert blocks._attend is keep  # the ceiling model puts the real attention back
    train = res["train"]
    # Without its attention core the network does fewer operations, not the same ones.
    assert train["ours_heads8_noattn"]["flop"] < train["ours_heads8"]["flop"]
    assert train["ours_heads8"]["flop"] == train["ours"]["flop"]  # heads change no arithmetic
    (path,) = res["attention_paths"]  # tiny: one attention layer shape, 16 positions
    assert path["shape"] == [4, 8, 16, 4] and path["layers"] >= 1
    assert set(path["ms_per_call"]) == set(attention.PATHS)
    table = attention.markdown_table(res)
    assert "attention core removed" in table and "(4, 8, 16, 4)" in table


def test_textbook_attention_matches_the_fused_kernel():
    from tools.bench.attention import textbook_attention

    q, k, v = torch.randn(3, 2, 4, 10, 8).unbind(0)
    torch.testing.assert_close(textbook_attention(q, k, v),
                               torch.nn.functional.scaled_dot_product_attention(q, k, v))


def test_attention_goal_budget_is_what_is_left_after_the_rest_of_the_step():
    from tools.bench.attention import goal_budget

    train = {"diffusers": {"ms_per_step": 130.0}, "ours_heads8": {"ms_per_step": 110.0},
             "ours_heads8_noattn": {"ms_per_step": 80.0}}
    b = goal_budget({"train": train}, goal=1.3)
    assert b["allowed_ms"] == pytest.approx(100.0) and b["attention_now_ms"] == 30.0
    assert b["attention_budget_ms"] == pytest.approx(20.0)
    assert b["needed_speedup"] == pytest.approx(1.5) and b["ceiling"] == pytest.approx(1.625)
    train["ours_heads8_noattn"]["ms_per_step"] = 105.0  # the rest alone is too slow
    assert goal_budget({"train": train})["needed_speedup"] == float("inf")
    del train["diffusers"]
    assert goal_budget({"train": train}) is None


def test_committed_attention_table_is_generated_from_its_results():
    from tools.bench.attention import markdown_table

    path = ROOT / "book" / "_static" / "bench" / "attention-cpu.json"
    assert path.with_suffix(".md").read_text() == markdown_table(json.loads(path.read_text()))


@pytest.mark.parametrize(
    "path", sorted((ROOT / "book" / "_static" / "bench").glob("precision-cpu*.json")),
    ids=lambda p: p.name)
def test_committed_precision_tables_are_generated_from_their_results(path):
    from tools.bench import precision

    res = json.loads(path.read_text())
    assert path.with_suffix(".md").read_text() == precision.markdown_table(res)
    assert res["meta"]["machine"]["cpu"]  # each table names its processor
