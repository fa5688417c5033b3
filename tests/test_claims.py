"""check_claim: a stated finding prints when it holds and stops the chapter when it does not."""

import numpy as np
import pytest
import torch

from unet_edu.claims import ClaimFailed, check_claim


def test_a_claim_that_holds_prints_one_line(capsys):
    check_claim("two is more than one", 2 > 1)
    check_claim("numpy and torch booleans count", np.float64(3) > 2)
    check_claim("a tensor comparison counts", torch.tensor(3.0) > 2)
    assert capsys.readouterr().out.splitlines() == [
        "claim holds: two is more than one",
        "claim holds: numpy and torch booleans count",
        "claim holds: a tensor comparison counts",
    ]


def test_a_claim_that_fails_names_the_sentence_and_the_numbers():
    with pytest.raises(ClaimFailed, match=r"'DDIM-20 diverges'.*max \|x\| 1\.0.*rewrite"):
        check_claim("DDIM-20 diverges", False, "max |x| 1.0")
    assert issubclass(ClaimFailed, AssertionError)


def test_spread_helpers_follow_the_books_rule():
    from unet_edu.claims import mean_sd, measurably_apart, pm

    m, sd = mean_sd([1.0, 2.0, 3.0])
    assert m == 2.0 and sd == 1.0  # sample sd, divisor n - 1
    assert pm([0.0250, 0.0243, 0.0257]) == "0.0250 ± 0.0007"
    assert measurably_apart([1.0, 1.1, 0.9], [2.0, 2.1, 1.9])       # 1.0 apart, sd 0.1
    assert not measurably_apart([1.0, 1.1, 0.9], [1.1, 1.2, 1.0])   # 0.1 apart
    with pytest.raises(ValueError, match="at least two seeds"):
        mean_sd([1.0])
