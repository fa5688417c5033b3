"""Attribute estimators, thresholds from the training digits, and captions that are true."""

import math

import pytest
import torch
import torch.nn.functional as F

from unet_edu import captions as cap
from unet_edu.data import mnist


def bar(width: float, length: float = 20.0, angle: float = 0.0, size: int = 28, ss: int = 8):
    """An evenly inked bar, ``width`` pixels across (horizontally), ``length`` tall, leaning
    ``angle`` degrees to the right, rendered at ``ss`` x supersampling and averaged down."""
    coords = (torch.arange(size * ss, dtype=torch.float64) + 0.5) / ss
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    dy = yy - size / 2
    dx = xx - size / 2 + dy * math.tan(math.radians(angle))  # upwards (dy < 0) moves right
    inside = (dx.abs() <= width / 2) & (dy.abs() <= length / 2)
    return F.avg_pool2d(inside.double()[None, None], ss)[0].float()  # (1, size, size)


@pytest.mark.parametrize("angle", [-25.0, -10.0, 0.0, 12.0, 30.0])
def test_slant_recovers_the_angle_of_a_leaning_bar(angle):
    assert cap.slant(bar(3.0, angle=angle)).item() == pytest.approx(angle, abs=0.3)


@pytest.mark.parametrize("width", [2.0, 3.0, 4.0])
@pytest.mark.parametrize("angle", [0.0, 20.0, -20.0])
def test_thickness_and_width_of_a_bar(width, angle):
    b = bar(width, angle=angle)
    expected = width * 20 / (20 + width)  # area over half the perimeter: w L / (L + w)
    assert cap.stroke_thickness(b).item() == pytest.approx(expected, rel=0.2)
    # the slant is taken out before the width is measured
    assert cap.digit_width(b).item() == pytest.approx(width, abs=0.5)


def test_thicker_bars_read_thicker_and_wider_ones_wider():
    bars = torch.stack([bar(w) for w in (2.0, 4.0, 6.0)])
    assert torch.all(cap.stroke_thickness(bars).diff() > 1.0)
    torch.testing.assert_close(cap.digit_width(bars), torch.tensor([2.0, 4.0, 6.0]))


def test_a_blank_image_has_no_attributes_and_bad_images_are_refused():
    values = cap.measure(torch.zeros(2, 1, 28, 28))
    assert all(v.isnan().all() for v in values.values())
    with pytest.raises(ValueError, match=r"use \(\(x \+ 1\) / 2\)"):
        cap.slant(torch.full((1, 1, 28, 28), -1.0))
    with pytest.raises(ValueError, match="NaN"):
        cap.slant(torch.full((1, 1, 28, 28), float("nan")))
    with pytest.raises(ValueError, match="x.float"):
        cap.slant(torch.zeros(1, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"x\[None\]"):
        cap.slant(torch.zeros(28, 28))


@pytest.fixture(scope="module")
def digits():
    return mnist("train", source="bundled")


@pytest.fixture(scope="module")
def thresholds(digits):
    return cap.fit_thresholds(digits.images, digits.labels)


def test_thresholds_split_the_training_digits_into_thirds(digits, thresholds):
    values = cap.measure(digits.images)
    bins = cap.attribute_bins(values, digits.labels, thresholds)
    n = len(digits.labels)
    for j in (0, 1):  # thickness overall, width within each class
        counts = torch.bincount(bins[:, j], minlength=3)
        assert torch.all((counts - n / 3).abs() < 0.02 * n), counts
    for c in range(10):
        counts = torch.bincount(bins[digits.labels == c, 1], minlength=3)
        assert counts.min() >= 0.3 * counts.sum()
    # a wide one is narrower than a narrow zero: width words are relative to the class
    assert thresholds.width[1][1] < thresholds.width[0][0]
    slant_bins = torch.bincount(bins[:, 2], minlength=4)
    assert slant_bins.min() > 0.15 * n  # left, upright, (none), right all common
    again = cap.CaptionThresholds.from_dict(thresholds.to_dict())
    assert again == thresholds


def _is_true(caption, value, label, thresholds):
    asked = cap.parse_caption(caption)
    t, w, s = value["thickness"], value["width"], value["slant"]
    lo, hi = thresholds.width[label]
    checks = {"thin": t <= thresholds.thickness[0], "thick": t > thresholds.thickness[1],
              "narrow": w <= lo, "wide": w > hi,
              "slanted left": s <= thresholds.slant[0],
              "upright": thresholds.slant[0] < s <= thresholds.slant[1],
              "slanted right": s > thresholds.slant[2]}
    words = [asked[a] for a in ("thickness", "width", "slant") if asked[a]]
    return asked["digit"] == label and all(checks[word] for word in words)


def test_every_generated_caption_is_true_of_its_digit(digits, thresholds):
    x, y = digits.images[:600], digits.labels[:600]
    texts = cap.describe(x, y, thresholds)
    values = cap.measure(x)
    for i, text in enumerate(texts):
        v = {k: float(values[k][i]) for k in values}
        assert _is_true(text, v, int(y[i]), thresholds), (i, text, v)
    assert sum(len(t.split()) > 1 for t in texts) > 0.8 * len(texts)  # most say more than the class


def test_training_captions_drop_words_at_random_but_stay_true(digits, thresholds):
    x, y = digits.images[:200], digits.labels[:200]
    bins = cap.attribute_bins(cap.measure(x), y, thresholds)
    full = cap.describe(x, y, thresholds)
    assert cap.training_captions(y, bins, p_word=1.0) == full
    assert cap.training_captions(y, bins, p_word=0.0) == [cap.CLASS_WORDS[c] for c in y]
    a = cap.training_captions(y, bins, torch.Generator().manual_seed(3), 0.5)
    b = cap.training_captions(y, bins, torch.Generator().manual_seed(3), 0.5)
    assert a == b and a != full
    for short, long in zip(a, full):  # a dropped word leaves the others in order
        assert all(w in long.split() for w in short.split())
    tok = cap.tokenizer()
    assert tok.encode(a).shape == (200, 8)
    with pytest.raises(ValueError, match="p_word"):
        cap.training_captions(y, bins, p_word=1.5)


def test_caption_order_and_bins():
    assert cap.caption(7, [2, 0, 0]) == "thick narrow seven slanted left"
    assert cap.caption(7, [1, 1, 2]) == "seven"  # middle thirds and the 5-15 degree band
    assert cap.caption(0, [0, 2, 1], keep=[True, False, True]) == "thin zero upright"
    assert cap.caption(3) == "three"


def test_parse_caption_reads_and_rejects():
    assert cap.parse_caption("seven thick, slanted right") == {
        "digit": 7, "thickness": "thick", "width": None, "slant": "slanted right"}
    with pytest.raises(ValueError, match="without a direction"):
        cap.parse_caption("slanted seven")
    with pytest.raises(ValueError, match="two things about thickness"):
        cap.parse_caption("thin thick seven")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        cap.parse_caption("small seven")
    with pytest.raises(ValueError, match="non-empty caption"):
        cap.parse_caption("")


def test_prompts_vary_one_attribute_at_a_time():
    prompts = cap.prompts_varying("thickness", 7)
    assert [p.text for p in prompts] == ["seven", "thin seven", "thick seven"]
    assert [p.word for p in prompts] == [None, "thin", "thick"]
    slanted = cap.prompts_varying("slant", 2, fixed={"thickness": "thin"})
    assert [p.text for p in slanted] == ["thin two", "thin two slanted left", "thin two upright",
                                         "thin two slanted right"]
    for p in slanted:
        asked = cap.parse_caption(p.text)
        assert asked["slant"] == p.word and asked["thickness"] == "thin"
    with pytest.raises(ValueError, match="attribute must be one of"):
        cap.prompts_varying("size", 7)
    with pytest.raises(ValueError, match="the attribute that varies"):
        cap.prompts_varying("width", 7, fixed={"width": "wide"})
    with pytest.raises(ValueError, match="each entry must be an attribute and one of its words"):
        cap.prompts_varying("width", 7, fixed={"slant": "sideways"})
    with pytest.raises(ValueError, match="digit must be a class"):
        cap.prompts_varying("width", 10)


def test_fit_thresholds_needs_every_class(digits):
    few = digits.labels < 9
    with pytest.raises(ValueError, match=r"classes \[9\]"):
        cap.fit_thresholds(digits.images[few], digits.labels[few])
    with pytest.raises(ValueError, match="quantiles"):
        cap.fit_thresholds(digits.images, digits.labels, quantiles=(0.7, 0.3))
