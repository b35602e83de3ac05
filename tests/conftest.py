"""Shared fixtures. Ray is kept on 127.0.0.1 and without auth/usage reporting for the whole session."""

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers share the 2 cores: one torch thread each, or they stall
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Under xdist (scripts/test.sh), every test on the session's Ray cluster goes to one worker, which then
    starts the one cluster; the rest are spread over the workers one by one."""
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("ray-cluster"))


@pytest.fixture
def rng() -> torch.Generator:
    """A seeded CPU generator."""
    return torch.Generator().manual_seed(0)
