"""Shared fixtures. Ray is kept on 127.0.0.1 and without auth/usage reporting for the whole session."""

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
if os.environ.get("PYTEST_XDIST_WORKER"):  # the workers share the cores: one torch thread each, or they stall
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Under xdist (scripts/test.sh: work stealing over this order) the long tests go first, so the workers do not
    end on one of them alone: the trainings marked slow, then those on a Ray cluster (each
    worker starts its own, on its own ports), then the rest, each group in file order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return

    def rank(item) -> int:
        if item.get_closest_marker("slow"):
            return 0
        return 1 if "ray_cluster" in getattr(item, "fixturenames", ()) else 2

    items.sort(key=rank)


@pytest.fixture(autouse=True)
def _one_thread_per_worker():
    """A test that sets torch's threads (the CLI's --threads, a measured one-thread run) gives them back."""
    n = torch.get_num_threads()
    yield
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@pytest.fixture
def rng() -> torch.Generator:
    """A seeded CPU generator."""
    return torch.Generator().manual_seed(0)
