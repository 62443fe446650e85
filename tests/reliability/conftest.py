"""Shared fixtures of the reliability matrix: a tiny synthetic data set, a 2-step tiny run, a tiny classifier.

Everything is 32 px and made once per session through the CLI (the same path users take).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_engine


@pytest.fixture(scope="session")
def rel_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.data.synthetic import write_synthetic_dataset

    return Path(write_synthetic_dataset(tmp_path_factory.mktemp("rel") / "data", size=32, n_unlabelled=4,
                                        n_train=3, n_test=2))


@pytest.fixture(scope="session")
def rel_run(tmp_path_factory: pytest.TempPathFactory, rel_data: Path) -> Path:
    run = tmp_path_factory.mktemp("rel") / "run"
    res = run_engine("pretrain", "--data", rel_data, "--preset", "tiny", "--out", run, "--max-steps", "2",
                     "--sample-every", "0", "--no-progress")
    assert res.returncode == 0, res.stderr[-2000:]
    return run


@pytest.fixture(scope="session")
def rel_clf(tmp_path_factory: pytest.TempPathFactory, rel_run: Path, rel_data: Path) -> Path:
    clf = tmp_path_factory.mktemp("rel") / "clf"
    res = run_engine("fit", "--run", rel_run, "--data", rel_data, "--steps", "10,50", "--blocks", "1,2",
                     "--members", "2", "--epochs", "1", "--out", clf, "--no-cache")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["out"] == str(clf)
    return clf
