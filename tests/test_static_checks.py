"""Static checks as part of the suite (CI runs the suite): `ruff check` and `mypy engine dashboard` stay clean.

Both read their settings from pyproject.toml. (.ci/run only runs the suite, so the checks live here.)
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str) -> list[str]:
    exe = Path(sys.executable).with_name(name)
    if exe.exists():
        return [str(exe)]
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (tests/requirements.txt)")
    return [found]


def test_ruff_is_clean() -> None:
    r = subprocess.run([*_tool("ruff"), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


@pytest.mark.slow
def test_mypy_is_clean(tmp_path: Path) -> None:
    r = subprocess.run([*_tool("mypy"), "--cache-dir", str(tmp_path / "mypy_cache"), "engine", "dashboard"], cwd=REPO,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
