"""The engine layout: stage packages, a root that holds only infrastructure, and the old flat paths still import."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from engine._legacy_paths import MOVED

ROOT = Path(__file__).resolve().parents[1]
#: modules that stay at the engine root: entry points and infrastructure every stage uses
ROOT_MODULES = {"__init__", "__main__", "_legacy_paths", "cli", "errors", "validation", "atomic", "output_lock",
                "safe_names", "memory", "artefacts", "progress"}


def test_the_engine_root_holds_only_infrastructure() -> None:
    flat = {p.stem for p in (ROOT / "engine").glob("*.py")}
    assert flat == ROOT_MODULES, f"new flat modules belong in a stage package: {sorted(flat - ROOT_MODULES)}"


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_flat_path_imports_the_same_module_object(old: str) -> None:
    new = importlib.import_module(MOVED[old])
    assert importlib.import_module(old) is new
    assert new.__spec__ is not None and new.__spec__.name == MOVED[old]  # the alias did not rename the module
    assert not (ROOT / (old.replace(".", "/") + ".py")).exists()


def test_from_old_path_import_works_in_a_fresh_interpreter() -> None:
    code = ("from engine.features import FeatureSpec; import engine.classifier as c; "
            "import engine.segmentation.features as f; assert FeatureSpec is f.FeatureSpec; "
            "assert c.__name__ == 'engine.segmentation.classifier'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_an_unknown_flat_name_still_fails() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("engine.no_such_module")
