"""Dashboard test setup: which workspace the app shows, and private output/cache folders."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "dashboard" / "app.py"


def workspace_root() -> Path:
    """$DIFFSEG_WORKSPACE if set, else the embedded default assets/."""
    env = os.environ.get("DIFFSEG_WORKSPACE")
    return Path(env) if env else REPO / "assets"


@pytest.fixture(scope="session")
def app_path() -> Path:
    return APP


@pytest.fixture(scope="session")
def dashboard_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = workspace_root()
    missing = [p for p in ("demo_run/config.json", "demo_data/classes.json", "demo_classifier/weights.pt")
               if not (root / p).exists()]
    if missing:
        pytest.skip(f"workspace {root} is incomplete (missing {', '.join(missing)})")
    tmp = tmp_path_factory.mktemp("dashboard")
    env = {"DIFFSEG_WORKSPACE": str(root), "DIFFSEG_OUT": str(tmp / "out"),
           "DIFFSEG_CACHE_DIR": os.environ.get("DIFFSEG_CACHE_DIR", str(tmp / "cache")),
           "OMP_WAIT_POLICY": "PASSIVE", "DIFFSEG_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
