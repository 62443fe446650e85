"""Acceptance on the shipped demo: the gradient-and-shapes photo is reported as unlike the training frames by
`segment` (JSON and printed line); a real test frame is not; the shipped classifier is calibrated."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import REPO, run_engine

from engine.uncertainty.frame_scores import REVIEW_SCORE

DEMO_CLF = REPO / "assets" / "demo_classifier"
FAM = REPO / "assets" / "demo_run" / "familiarity.json"


@pytest.mark.skipif(not FAM.is_file(), reason="assets/demo_run/familiarity.json not shipped")
def test_gradient_photo_is_unlike_the_training_frames(photo: Path, tmp_path: Path) -> None:
    frame = max((REPO / "assets" / "demo_data" / "images").glob("*.png"))  # a test frame
    res = run_engine("segment", "--classifier", DEMO_CLF, photo, frame, "--out", tmp_path, "--no-cache", timeout=400)
    assert res.returncode == 0, res.stderr[-2000:]
    infos = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    photo_info, frame_info = infos
    assert photo_info["unfamiliar"] is True and photo_info["familiarity"]["level"] == "unfamiliar"
    assert photo_info["familiarity"]["percentile"] >= 99
    assert "Unlike the training frames" in photo_info["familiarity"]["message"]
    assert frame_info["unfamiliar"] is False and frame_info["familiarity"]["available"]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith(str(photo))]
    assert len(lines) == 1 and "UNLIKE THE TRAINING FRAMES" in lines[0]


def test_shipped_classifier_is_calibrated() -> None:
    meta = json.loads((DEMO_CLF / "config.json").read_text())
    cal = meta.get("calibration")
    if cal is None:
        pytest.skip("assets/demo_classifier has no calibration yet (python -m engine calibrate)")
    assert cal["nll_after"] <= cal["nll_before"] and cal["temperature"] > 0
    assert set(cal["fitted_stems"]) == set(json.loads((REPO / "assets/demo_data/split.json").read_text())["train"])
    assert len(meta["review_calibration"]["scores"]) >= 50
    assert meta["review_calibration"]["meta"]["score"] == REVIEW_SCORE  # thresholds of today's review score
