import pytest

from unet_edu.exercises import chapter3 as ch3
from unet_edu.exercises import chapter4 as ch4
from unet_edu.receptive_field import layer_table


def test_chain_rf_matches_hand_computation():
    assert ch3.chain_rf([3] * 5) == 11
    assert ch3.chain_rf([3, 2, 3], [1, 2, 1]) == 3 + 1 + 4
    assert ch3.chain_rf([3, 3, 3, 3], dilations=[1, 2, 4, 8]) == 31
    with pytest.raises(ValueError):
        ch3.chain_rf([3, 3], [1])


def test_unet_deepest_path():
    path = ch3.unet_deepest_path(5)
    assert len(path) == 4 * 3 + 2 + 4 * 3
    assert layer_table(path)[-1]["rf"] == 200  # the paper's 5 levels, valid or same alike
    assert layer_table(ch3.unet_deepest_path(2))[-1]["rf"] == 1 + 4 + 1 + 2 * 4 + 4
    with pytest.raises(ValueError):
        ch3.unet_deepest_path(1)


def test_chapter3_checkers(grade):
    assert grade(ch3.check_rf, [3, 3, 3], [1, 1, 1], 7)
    assert not grade(ch3.check_rf, [3, 3, 3], [1, 1, 1], 9)
    assert grade(ch3.check_dilated_rf, [1, 2, 4], 15)
    assert grade(ch3.check_unet_path_rf, 4, layer_table(ch3.unet_deepest_path(4))[-1]["rf"])
    assert not grade(ch3.check_unet_path_rf, 4, 648)


def test_chapter4_helpers_and_checkers(grade):
    assert ch4.slowest_period(2) == pytest.approx(6.283, rel=1e-3)  # one pair: frequency 1
    assert ch4.slowest_period(128) > 10000 * 0.9
    lin, cos = ch4.snr_crossing("linear"), ch4.snr_crossing("cosine")
    assert 0 < lin < cos < 1000
    assert grade(ch4.check_slowest_period, 64, ch4.slowest_period(64) * 1.005)
    assert grade(ch4.check_snr_crossing, "cosine", cos + 1)
    assert not grade(ch4.check_snr_crossing, "cosine", cos + 5)
    assert grade(ch4.check_time_params, 32, 64, "scale_shift", 64 * 64 + 64)
    assert grade(ch4.check_time_params, 32, 64, "add", 64 * 32 + 32)
    assert not grade(ch4.check_time_params, 32, 64, "add", 64 * 64 + 64)
