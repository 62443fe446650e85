"""Dashboard test setup: which workspace the app shows, and private output/cache folders."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from dashboard_harness import dashboard_environment

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "dashboard" / "app.py"


@pytest.fixture(scope="session")
def app_path() -> Path:
    return APP


@pytest.fixture(scope="session")
def dashboard_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = dashboard_environment(tmp_path_factory.mktemp("dashboard"))
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
