"""`python -m engine report`: writes one self-contained file; a missing workspace is one clear line, exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import REPO, run_engine


@pytest.mark.slow  # loads the demo classifier and plotly: ~20 s idle, minutes on a loaded machine
def test_report_cli_writes_a_self_contained_file(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    res = run_engine("report", "--workspace", REPO / "assets", "--frames", "1", "--out", out,
                     DIFFSEG_CACHE_DIR=str(tmp_path / "cache"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["report"] == str(out)
    html = out.read_text()
    assert '<section id="examples">' in html and "IoU" in html and "<script src=" not in html


def test_report_cli_refuses_a_missing_workspace(tmp_path: Path) -> None:
    res = run_engine("report", "--workspace", tmp_path / "nope", "--out", tmp_path / "r.html")
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: --workspace {tmp_path / 'nope'}: no such folder"
    assert not (tmp_path / "r.html").exists()
