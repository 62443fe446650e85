"""Fixtures for the labelling-loop tests: a small labelled synthetic set with unlabelled frames, a tiny run."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest


def _segmentation_conftest():
    """tests/segmentation/conftest.py as a module (its make_run_dir writes the random-init tiny run)."""
    spec = importlib.util.spec_from_file_location("seg_conftest", Path(__file__).resolve().parents[1] / "segmentation" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


make_run_dir = _segmentation_conftest().make_run_dir


@pytest.fixture(scope="session")
def loop_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("loop_run") / "run", seed=0)


def write_loop_data(root: Path, n_train: int = 3, n_test: int = 3, n_unlabelled: int = 6, size: int = 32) -> Path:
    """Synthetic 5-class frames: train + test labelled (split.json), the rest unlabelled."""
    from engine.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(root, size=size, seed=3, n_unlabelled=n_unlabelled, n_train=n_train, n_test=n_test)
    split = json.loads((root / "split.json").read_text())
    (root / "split.json").write_text(json.dumps({"train": split["train"], "test": split["test"]}))
    return root


@pytest.fixture()
def loop_data(tmp_path: Path) -> Path:
    return write_loop_data(tmp_path / "data")
