"""Test settings for unit tests and the nbval run of the chapters: small CPU budget, no downloads."""

import os

os.environ.setdefault("UNET_EDU_FAST", "1")
os.environ.setdefault("UNET_EDU_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
