"""CLI end to end on a tiny run: calibrate (no refit), familiarity fit / score, segment's verdicts, error lines."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import run_engine

from engine.segmentation.classifier import fit_classifier, load_classifier
from engine.segmentation.classifier_training import FitConfig
from engine.data.folder import FolderDataset
from engine.segmentation.features import FeatureSpec
from engine.models.run import load_run
from engine.uncertainty import familiarity as fam
from engine.uncertainty.frame_scores import REVIEW_SCORE, review_score

# several engine subprocesses each (torch import + a tiny UNet): over 30 s on 2 busy cores
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def tiny_clf(unc_run_dir: Path, unc_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("unc_cli")
    run_dir = Path(shutil.copytree(unc_run_dir, root / "run"))
    clf = fit_classifier(load_run(run_dir, "cpu"), FolderDataset(unc_data), FeatureSpec((10, 50), (1, 2)),
                         FitConfig(members=2, max_epochs=1, seed=0))
    clf.save(root / "clf")
    return {"run": run_dir, "clf": root / "clf", "root": root}


def _json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_calibrate_adds_a_temperature_without_refitting(tiny_clf: dict[str, Path], unc_data: Path) -> None:
    clf_dir = tiny_clf["root"] / "clf_cal"
    shutil.copytree(tiny_clf["clf"], clf_dir)
    weights_before = (clf_dir / "weights.pt").read_bytes()
    old = load_classifier(clf_dir, "cpu", use_cache=False)
    assert old.temperature == 1.0 and old.review is None  # classifiers without calibration keep loading
    res = run_engine("calibrate", "--classifier", clf_dir, "--data", unc_data, "--folds", "2", "--max-pool", "8")
    assert res.returncode == 0, res.stderr[-2000:]
    out = _json_lines(res.stdout)[-1]
    assert out["nll_after"] <= out["nll_before"] + 1e-9
    assert (clf_dir / "weights.pt").read_bytes() == weights_before  # the ensemble is not refitted
    meta = json.loads((clf_dir / "config.json").read_text())
    assert meta["calibration"]["temperature"] == pytest.approx(out["temperature"], abs=1e-4)
    assert meta["calibration"]["fitted_stems"] == FolderDataset(unc_data).stems("train")  # train only, never test
    assert len(meta["review_calibration"]["scores"]) == 8 and "unlabelled" in meta["review_calibration"]["source"]
    new = load_classifier(clf_dir, "cpu", use_cache=False)
    img = torch.rand(3, 32, 32) * 2 - 1
    a, b = old.predict_tensor(img), new.predict_tensor(img)
    assert torch.equal(a.labels, b.labels) and a.js_score == pytest.approx(b.js_score)  # mask and JS unchanged
    assert b.score == pytest.approx(review_score(b.probs), rel=1e-6)  # the review score reads calibrated probs
    assert new.review is not None and new.review["meta"]["score"] == REVIEW_SCORE
    assert torch.allclose(b.probs.sum(0), torch.ones(32, 32), atol=1e-5)


def test_segment_says_not_available_then_reports_familiarity(tiny_clf: dict[str, Path], unc_data: Path,
                                                             photo: Path, tmp_path: Path) -> None:
    frame = next((unc_data / "images").glob("*.png"))
    res = run_engine("segment", "--classifier", tiny_clf["clf"], frame, "--out", tmp_path / "a", "--no-cache")
    assert res.returncode == 0, res.stderr[-2000:]
    info = _json_lines(res.stdout)[0]
    assert info["familiarity"]["available"] is False and info["unfamiliar"] is False
    assert "python -m engine familiarity fit --run" in info["familiarity"]["message"]
    assert "not available" in res.stderr and info["review"] is None  # uncalibrated: says so, flags nothing

    from engine.commands.uncertainty_cmd import _pool

    run = load_run(tiny_clf["run"], "cpu")
    pool, src = _pool(str(unc_data), run.image_size, 24)
    model = fam.fit_familiarity(run, pool, fam.FamiliaritySpec((10, 200, 700), (1, 2)), folds=4, pool_source=src)
    model.save(fam.model_path(tiny_clf["run"]))
    res = run_engine("segment", "--classifier", tiny_clf["clf"], frame, photo, "--out", tmp_path / "b", "--no-cache")
    assert res.returncode == 0, res.stderr[-2000:]
    infos = _json_lines(res.stdout)
    assert [i["familiarity"]["available"] for i in infos] == [True, True]
    assert all(0 <= i["familiarity"]["percentile"] <= 100 for i in infos)
    score = run_engine("familiarity", "score", "--run", tiny_clf["run"], photo, tmp_path / "missing.png")
    assert score.returncode == 2 and "missing.png" in score.stderr and "Traceback" not in score.stderr
    assert _json_lines(score.stdout)[0]["percentile"] == infos[1]["familiarity"]["percentile"]


def test_bad_inputs_give_one_line(tiny_clf: dict[str, Path], tmp_path: Path) -> None:
    res = run_engine("calibrate", "--classifier", tiny_clf["clf"])
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith("error: --data is required")
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    res = run_engine("segment", "--classifier", tiny_clf["clf"], bad, "--out", tmp_path / "o", "--review-percent", "120")
    assert res.returncode == 2 and "--review-percent" in res.stderr
