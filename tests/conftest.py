"""Fixtures shared by the unit tests (the repository's conftest.py sets the environment)."""

import pytest


@pytest.fixture
def grade(capsys):
    """Run an exercise checker: it must print one verdict and return None; True when Correct."""
    def run(check, *args, **kwargs):
        assert check(*args, **kwargs) is None  # a bare True/False would show up under the verdict
        out = capsys.readouterr().out
        assert out.startswith(("Correct: ", "Not yet: ")) and out.count("\n") == 1, out
        return out.startswith("Correct: ")
    return run
