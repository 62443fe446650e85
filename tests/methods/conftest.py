"""Fixtures for the comparison methods: a tiny synthetic set and a 2-step tiny DDPM run (session scope)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers import PYTHON, REPO, subprocess_env


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "data", size=32, n_unlabelled=6, n_train=3,
                                   n_test=2)


@pytest.fixture(scope="session")
def tiny_run(synth_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    subprocess.run([PYTHON, "-m", "engine", "pretrain", "--data", str(synth_small), "--preset", "tiny", "--out",
                    str(out), "--max-steps", "2", "--no-progress"], cwd=REPO, env=subprocess_env(), check=True,
                   capture_output=True, timeout=300)
    return out
