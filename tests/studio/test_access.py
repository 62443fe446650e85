"""Path confinement and public mode of the dashboard (engine.app.access)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.app.access import PathRefused, policy_from_env


def test_paths_inside_the_roots_pass_others_are_refused(tmp_path: Path) -> None:
    root, shipped = tmp_path / "ws", tmp_path / "assets"
    (root / "runs").mkdir(parents=True)
    shipped.mkdir()
    pol = policy_from_env({"DIFFSEG_OUT": str(root), "DIFFSEG_WORKSPACE": str(shipped)})
    assert pol.check(root / "runs" / "new", "run") == (root / "runs" / "new").resolve()
    assert pol.check("runs/x", "run") == (root / "runs" / "x").resolve()  # relative → under the root
    assert pol.check(shipped / "demo_data", "data") == (shipped / "demo_data").resolve()
    with pytest.raises(PathRefused, match=r"job output: `.*assets/x` is outside the allowed folder `.*ws`"):
        pol.check(shipped / "x", "job output", write=True)  # the shipped workspace is read-only
    with pytest.raises(PathRefused, match="outside the allowed folders"):
        pol.check("/etc", "data")
    with pytest.raises(PathRefused, match="outside"):
        pol.check(root / ".." / "elsewhere", "run")
    os.symlink("/etc", root / "link")
    with pytest.raises(PathRefused, match="`/etc` is outside"):
        pol.check(root / "link", "data")  # symlinks are followed


def test_explicit_root_and_public_mode(tmp_path: Path) -> None:
    pol = policy_from_env({"DIFFSEG_PATH_ROOT": str(tmp_path), "DIFFSEG_OUT": "/somewhere"})
    assert pol.root == tmp_path.resolve() and not pol.public
    pub = policy_from_env({"DIFFSEG_PUBLIC": "1"})
    assert pub.public
    with pytest.raises(PathRefused, match="typed paths are off in public/demo mode"):
        pub.check(tmp_path, "run")
