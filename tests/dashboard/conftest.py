"""Dashboard test setup: the app's path (the workspace fixture `dashboard_env` lives in tests/conftest.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "dashboard" / "app.py"


@pytest.fixture(scope="session")
def app_path() -> Path:
    return APP
