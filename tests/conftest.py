"""Shared fixtures. Ray is kept on 127.0.0.1 and without auth/usage reporting for the whole session."""

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def rng() -> torch.Generator:
    """A seeded CPU generator."""
    return torch.Generator().manual_seed(0)
