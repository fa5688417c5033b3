"""check_claim and compare: stated findings, and verdicts as strong as their evidence."""

import math

import numpy as np
import pytest
import torch

from unet_edu.claims import Check, ClaimFailed, check_claim, compare, interval, mean_sd, pm


def test_a_claim_that_holds_shows_one_checked_line(capsys):
    check_claim("two is more than one", 2 > 1)
    check_claim("numpy and torch booleans count", np.float64(3) > 2, "3 > 2")
    check_claim("a tensor comparison counts", torch.tensor(3.0) > 2)
    assert capsys.readouterr().out.splitlines() == [
        "✓ checked: two is more than one",
        "✓ checked: numpy and torch booleans count (3 > 2)",
        "✓ checked: a tensor comparison counts",
    ]


def test_the_checked_line_is_html_with_its_numbers_apart():
    html = Check("a < b", "a 1 < b 2").__class__("x < y & z", "1 < 2")._repr_html_()
    assert html.startswith('<div class="unet-check">') and "✓ checked:" in html
    assert '<span class="unet-check-evidence">1 &lt; 2</span>' in html
    assert "x &lt; y &amp; z" in html  # the sentence is escaped, not interpreted


def test_a_claim_that_fails_names_the_sentence_and_the_numbers():
    with pytest.raises(ClaimFailed, match=r"'DDIM-20 diverges'.*max \|x\| 1\.0.*rewrite"):
        check_claim("DDIM-20 diverges", False, "max |x| 1.0")
    assert issubclass(ClaimFailed, AssertionError)


def test_a_condition_of_several_values_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"one true/false value.*all\(\) or any\(\)"):
        check_claim("all positive", torch.tensor([1.0, 2.0]) > 0)
    with pytest.raises(ValueError, match="sentence it checks"):
        check_claim("", True)


def test_spread_helpers():
    m, sd = mean_sd([1.0, 2.0, 3.0])
    assert m == 2.0 and sd == 1.0  # sample sd, divisor n - 1
    assert pm([0.0250, 0.0243, 0.0257]) == "0.0250 ± 0.0007"
    with pytest.raises(ValueError, match="at least two seeds"):
        mean_sd([1.0])


def _scores(rng, n_seeds, n_items, shift, seed_sd=0.02, item_sd=0.3, noise_sd=0.05,
            items=None):
    """Scores of two variants on shared test items: item difficulty shared by every seed."""
    items = rng.normal(1.0, item_sd, n_items) if items is None else items
    a = items + rng.normal(0, seed_sd, (n_seeds, 1)) + rng.normal(0, noise_sd, (n_seeds, n_items))
    b = (items + shift + rng.normal(0, seed_sd, (n_seeds, 1))
         + rng.normal(0, noise_sd, (n_seeds, n_items)))
    return a, b


def test_a_difference_not_resolved_at_3_seeds_is_apart_at_10():
    # The blind-vs-told situation: a small, consistent gap of about one seed-to-seed sd.
    rng = np.random.default_rng(2)
    items = rng.normal(1.0, 0.3, 512)
    a, b = _scores(rng, 10, 512, shift=0.02, items=items)
    three, ten = compare(a[:3], b[:3]), compare(a, b)
    assert three.verdict == "not resolved" and three.low < 0 < three.high
    assert ten.verdict == "apart" and ten.low > 0
    assert ten.high - ten.low < three.high - three.low


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    rng = np.random.default_rng(1)
    a, b = _scores(rng, 10, 2000, shift=0.0, seed_sd=0.005, item_sd=0.3, noise_sd=0.02)
    c = compare(a, b, margin=0.05)
    assert c.verdict == "equivalent" and -0.05 < c.low < c.high < 0.05
    assert "equivalent within ±0.05" in c.describe()
    # the same data with a margin narrower than the interval: not resolved, never "equal"
    narrow = compare(a, b, margin=abs(c.high - c.low) / 4)
    assert narrow.verdict == "not resolved"
    # no margin: a verdict of equivalence is impossible
    assert compare(a, b).verdict == "not resolved"


def test_ratios_are_computed_on_the_log_scale():
    rng = np.random.default_rng(2)
    a = rng.uniform(0.9, 1.1, (5, 300))
    c = compare(a, 1.5 * a, relative=True, margin=0.05)
    assert c.verdict == "apart" and c.effect == pytest.approx(1.5)
    assert c.low == pytest.approx(1.5, abs=1e-9) and c.high == pytest.approx(1.5, abs=1e-9)
    assert "ratio 1.500" in c.describe()
    with pytest.raises(ValueError, match="positive scores"):
        compare(a - 1, a, relative=True)


def test_test_set_noise_is_in_the_interval_even_when_seeds_agree():
    # Seeds agree perfectly (no seed noise) but the test set is small and its items vary:
    # the interval must not collapse to the seeds' zero spread.
    rng = np.random.default_rng(3)
    items = rng.normal(0, 1, 40)
    a = np.tile(items, (3, 1))
    b = a + 0.1 + np.tile(rng.normal(0, 0.5, 40), (3, 1))
    c = compare(a, b)
    assert c.se_seed == pytest.approx(0, abs=1e-12) and c.se_items > 0.05
    assert c.high - c.low > 0.2


@pytest.mark.parametrize("n_seeds", [3, 10])
def test_the_interval_covers_the_true_effect_at_least_95_percent_of_the_time(n_seeds):
    # Simulation: a new test set and new seeds each time; the true effect is 0.03.
    rng = np.random.default_rng(n_seeds)
    hits = 0
    trials = 300
    for _ in range(trials):
        a, b = _scores(rng, n_seeds, 200, shift=0.03, seed_sd=0.03, item_sd=0.2, noise_sd=0.1)
        c = compare(a, b, n_boot=300)
        # the population effect is 0.03 (item draws are shared, so their mean cancels)
        hits += c.low <= 0.03 <= c.high
    assert hits / trials >= 0.93


def test_unpaired_seeds_use_welch():
    rng = np.random.default_rng(5)
    a = rng.normal(1.0, 0.01, (3, 100))
    b = rng.normal(1.5, 0.01, (5, 100))
    c = compare(a, b, paired=False)
    assert c.verdict == "apart" and c.effect == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="paired=False"):
        compare(a, b)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="same test items"):
        compare(np.ones((3, 10)), np.ones((3, 11)))
    with pytest.raises(ValueError, match="at least 2 seeds"):
        compare(np.ones((1, 10)), np.ones((1, 10)))
    with pytest.raises(ValueError, match="NaN"):
        compare(np.full((3, 10), np.nan), np.ones((3, 10)))
    with pytest.raises(ValueError, match="margin"):
        compare(np.ones((3, 10)), np.ones((3, 10)), margin=-1)
    with pytest.raises(ValueError, match=r"shape \(n_seeds, n_items\)"):
        compare(np.ones((3, 10, 2)), np.ones((3, 10, 2)))


def test_interval_building_block():
    lo, hi = interval(1.0, 0.1, 0.0, n_seeds=3)
    assert hi - 1.0 == pytest.approx(4.302653 * 0.1, rel=1e-5)  # t(0.975, 2)
    lo2, hi2 = interval(1.0, 0.1, 0.1, n_seeds=3)
    assert hi2 - 1.0 == pytest.approx(4.302653 * math.sqrt(0.02), rel=1e-5)


def test_a_check_shows_once_in_a_notebook(monkeypatch):
    # check_claim displays its line at once; a cell ending in check_claim(...) must not show the
    # returned Check again as the cell's value.
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))
    check = Check("the effect is apart", "ratio 1.2")
    check._ipython_display_()
    check._ipython_display_()
    assert len(shown) == 1 and 'class="unet-check"' in shown[0]["text/html"]
    assert shown[0]["text/plain"] == "✓ checked: the effect is apart (ratio 1.2)"
