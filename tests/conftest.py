"""Test-wide settings: small thread counts (CI has 2 cores) and shared fixtures."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import helpers`
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `import engine`

# One thread by default: the 2 cores are shared with subprocess tests (and other jobs); OpenMP threads that
# spin on a busy core make a forward pass 10-20x slower than one thread does.
torch.set_num_threads(int(os.environ.get("DIFFSEG_TEST_THREADS", "1")))

from helpers import write_tiny_dataset  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` need CUDA: skipped on machines without it."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (pytest -m gpu on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _private_feature_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every feature cache a test (or a CLI subprocess it starts) opens by default lives in a temp dir,
    never in the real per-user cache (tests that need their own set DIFFSEG_CACHE_DIR or --cache-dir)."""
    if "DIFFSEG_CACHE_DIR" not in os.environ:
        os.environ["DIFFSEG_CACHE_DIR"] = str(tmp_path_factory.mktemp("feature_cache"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 px folder data set of 8 frames (2 labelled), written once per session."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="session")
def dashboard_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The dashboard's workspace (assets/ or $DIFFSEG_WORKSPACE) in the environment, with private out/cache dirs."""
    from dashboard_harness import dashboard_environment

    env = dashboard_environment(tmp_path_factory.mktemp("dashboard"))
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        yield env
