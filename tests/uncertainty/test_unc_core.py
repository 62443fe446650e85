"""Calibration, review and familiarity maths against naive references; determinism; round trips."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.models.run import load_run
from engine.uncertainty import calibration as cal
from engine.uncertainty import familiarity as fam
from engine.uncertainty import review as rv
from engine.uncertainty.unfamiliar_set import (
    MILD,
    UNFAMILIAR_FROM_FRAMES,
    UNFAMILIAR_SYNTH,
    build_set,
)


def _naive_ece(probs: np.ndarray, truth: np.ndarray, n_bins: int = 15) -> float:
    conf, pred = probs.max(0).ravel(), probs.argmax(0).ravel()
    t = truth.ravel()
    keep = t != 255
    conf, ok = conf[keep], (pred[keep] == t[keep])
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        sel = (conf >= lo) & ((conf < hi) if b < n_bins - 1 else (conf <= hi))
        if sel.any():
            total += sel.sum() / len(conf) * abs(ok[sel].mean() - conf[sel].mean())
    return float(total)


def test_ece_matches_a_naive_loop() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4, 16, 16))
    probs = np.exp(logits) / np.exp(logits).sum(0)
    truth = rng.integers(0, 4, (16, 16)).astype(np.uint8)
    truth[:2] = 255
    assert cal.ece(torch.tensor(probs), truth) == pytest.approx(_naive_ece(probs, truth), abs=1e-9)
    rel = cal.Reliability().update(torch.tensor(probs), truth).to_dict()
    assert sum(b["count"] for b in rel["bins"]) == int((truth != 255).sum()) and len(rel["bins"]) == 15


def test_perfectly_calibrated_pixels_have_zero_ece() -> None:
    probs = torch.zeros(2, 1, 10)
    probs[0], probs[1] = 1.0, 0.0
    assert cal.ece(probs, np.zeros((1, 10), np.uint8)) == 0.0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), sharp=st.floats(0.2, 5.0), n=st.integers(5, 300))
def test_temperature_never_increases_the_nll_it_was_fitted_on(seed: int, sharp: float, n: int) -> None:
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(n, 4, generator=g) * sharp, dim=1)
    labels = torch.randint(0, 4, (n,), generator=g)
    t = cal.fit_temperature(probs, labels)
    assert cal.nll(probs, labels, t) <= cal.nll(probs, labels) + 1e-9
    scaled = cal.apply_temperature(probs.T, t, dim=0)
    assert torch.equal(scaled.argmax(0), probs.T.argmax(0))  # the mask never changes


def test_temperature_recovers_a_known_overconfidence() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20000, 5, generator=g) * 2
    labels = torch.distributions.Categorical(logits=logits).sample()
    overconfident = torch.softmax(logits * 2.5, dim=1)  # true temperature 2.5
    assert cal.fit_temperature(overconfident, labels) == pytest.approx(2.5, rel=0.08)


def test_auroc_and_aurc_match_naive_definitions() -> None:
    rng = np.random.default_rng(1)
    scores, mious = rng.random(30), rng.random(30)
    bad = mious < np.median(mious)
    pairs = [(s1 > s0) + 0.5 * (s1 == s0) for s1 in scores[bad] for s0 in scores[~bad]]
    assert rv.auroc(scores, bad) == pytest.approx(np.mean(pairs))
    order = np.argsort(scores, kind="stable")
    naive = np.mean([1 - mious[order[:k]].mean() for k in range(1, 31)])
    rc = rv.risk_coverage(scores, mious)
    assert rc["aurc"] == pytest.approx(naive) and rc["aurc_oracle"] <= rc["aurc"]
    assert rc["aurc_random"] == pytest.approx(1 - mious.mean())
    assert rv.auroc(scores, np.ones(30, bool)) is None


def test_frame_miou_skips_absent_classes_and_ignore() -> None:
    truth = np.array([[0, 0, 1, 255]])
    pred = np.array([[0, 1, 1, 2]])
    assert rv.frame_miou(pred, truth, 4) == pytest.approx((0.5 + 0.5) / 2)


def test_review_threshold_means_the_same_share_for_every_method() -> None:
    """Two methods whose scores live on different scales flag the same share of typical frames at each
    percentage, and a frame at the same rank gets the same decision."""
    rng = np.random.default_rng(2)
    typical_a = rng.gamma(2.0, 0.05, 200)  # e.g. ensemble JS in nats
    typical_b = rng.lognormal(-4, 0.5, 200)  # e.g. a sample variance
    ca, cb = rv.ReviewCalibration(typical_a, "a"), rv.ReviewCalibration(typical_b, "b")
    for pct in (5, 10, 25):
        share_a = np.mean(typical_a > ca.threshold(pct))
        share_b = np.mean(typical_b > cb.threshold(pct))
        assert share_a == pytest.approx(pct / 100, abs=0.01) and share_b == pytest.approx(pct / 100, abs=0.01)
    da = rv.review_decision(float(np.sort(typical_a)[-5]), ca, 10)
    db = rv.review_decision(float(np.sort(typical_b)[-5]), cb, 10)
    assert da["review"] and db["review"] and da["score_percentile"] == db["score_percentile"]
    assert rv.ReviewCalibration.from_dict(ca.to_dict()).threshold(10) == pytest.approx(ca.threshold(10), abs=1e-6)
    assert rv.review_decision(0.1, None)["available"] is False


def test_conddiff_review_flag_uses_the_same_calibration(tmp_path: Path) -> None:
    from engine.data.classes import STUDY5
    from engine.methods.base import MethodContext, get_method
    from engine.uncertainty import method_review

    m = get_method("conddiff", MethodContext(STUDY5, 32, "cpu"), "tiny")
    assert m.review_threshold(5) == m.config["review_threshold"]  # uncalibrated: the config value, said so
    scores = {"default": [0.1, 0.2, 0.3, 0.4], "k5": list(np.linspace(0, 1, 101))}
    method_review.save(tmp_path, method_review.calibrations(scores, "test"))
    m.review_calibrations = method_review.load(tmp_path)
    assert m.review_threshold(5, 10) == pytest.approx(0.9)
    assert m.review_threshold(3, 10) == pytest.approx(rv.ReviewCalibration(np.array(scores["default"])).threshold(10))


def test_unfamiliar_set_is_deterministic_and_complete() -> None:
    frames = [np.random.default_rng(i).random((40, 40, 3)).astype(np.float32) for i in range(3)]
    a, b = build_set(frames, per_kind=2, seed=3, size=48), build_set(frames, per_kind=2, seed=3, size=48)
    kinds = {it.kind for it in a}
    assert kinds == set(UNFAMILIAR_SYNTH) | set(UNFAMILIAR_FROM_FRAMES) | set(MILD)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    assert {it.group for it in a if it.kind in MILD} == {"mild"}
    assert all(it.image.min() >= 0 and it.image.max() <= 1 and it.image.shape[2] == 3 for it in a)


def test_denoising_errors_are_deterministic_by_seed(unc_run_dir: Path) -> None:
    run = load_run(unc_run_dir, "cpu")
    img = torch.rand(3, 32, 32) * 2 - 1
    spec = fam.FamiliaritySpec((10, 200, 700), (1, 2), noise_seed=0)
    a, b = fam.denoising_errors(run, img, spec), fam.denoising_errors(run, img, spec)
    assert a.shape == (6,) and np.array_equal(a, b)
    other = fam.denoising_errors(run, img, fam.FamiliaritySpec((10, 200, 700), (1, 2), noise_seed=1))
    assert not np.allclose(a, other)
    with pytest.raises(ValueError, match="out of range"):
        fam.denoising_errors(run, img, fam.FamiliaritySpec((1000,), (1,)))


def test_density_round_trips_with_the_run(unc_run_dir: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = Path(shutil.copytree(unc_run_dir, tmp_path / "run"))
    run = load_run(run_dir, "cpu")
    g = torch.Generator().manual_seed(0)
    pool = torch.rand(20, 3, 32, 32, generator=g) * 0.4 - 0.2 + torch.linspace(-0.5, 0.5, 32)
    spec = fam.FamiliaritySpec((10, 200, 700), (1, 2))
    model = fam.fit_familiarity(run, pool, spec, folds=4, pool_source="test pool")
    model.save(fam.model_path(run_dir))
    loaded, why = fam.load_for_run(load_run(run_dir, "cpu"))
    assert loaded is not None and why == ""
    probe = torch.ones(3, 32, 32) * 0.9  # a flat bright frame: nothing like the pool
    v1, v2 = model.assess(run, probe), loaded.assess(run, probe)
    assert v1.to_dict() == v2.to_dict() and v1.unfamiliar and v1.percentile == 100.0
    assert np.allclose(loaded.density.pool_scores, model.density.pool_scores)
    typical = model.assess(run, pool[3])
    assert typical.available and typical.percentile < 100
    # the file belongs to these weights: another run's weights → "not available", with the command to fix it
    data = json.loads(fam.model_path(run_dir).read_text())
    data["run_weights_hash"] = "0" * 64
    fam.model_path(run_dir).write_text(json.dumps(data))
    verdict = fam.assess_frame(load_run(run_dir, "cpu"), probe)
    assert not verdict.available and "other weights" in verdict.message and "familiarity fit" in verdict.message
    fam.model_path(run_dir).unlink()
    missing = fam.assess_frame(load_run(run_dir, "cpu"), probe)
    assert not missing.available and "python -m engine familiarity fit --run" in missing.message


def test_scorecard_views_and_markdown() -> None:
    from engine.uncertainty.scorecard import markdown, reliability_points, risk_coverage_points, scorecard_rows

    rq = rv.review_quality([0.1, 0.5, 0.2, 0.9], [0.9, 0.5, 0.8, 0.3])
    assert rq["auroc_below_median"] == 1.0 and rq["aurc"] == pytest.approx(rq["aurc_oracle"])
    bins = cal.Reliability().update(torch.tensor([[[0.9, 0.2]], [[0.1, 0.8]]]), np.array([[0, 1]])).to_dict()["bins"]
    card = {"score": "s", "ece": 0.1, "n_test": 4, "reliability": bins, "ece_after_temperature": None, "temperature": None,
            "review": {**rq, "percent_flagged_typical": 10.0, "typical_source": "pool", "test_flagged_share": 0.25},
            "unfamiliar_auroc": 0.7}
    report = {"methods": {"a": {"miou": 0.5, "uncertainty_scorecard": card}, "b": {"miou": 0.4}},
              "uncertainty": {"familiarity": {"available": False, "why": "no file"}}}
    rows = scorecard_rows(report)
    assert [r["method"] for r in rows] == ["a"] and rows[0]["unfamiliar-input AUROC"] == 0.7
    assert {p["stage"] for p in reliability_points(report)} == {"as trained"}
    assert len(risk_coverage_points(report)) == 4
    md = markdown(report)
    assert "| a | 4 | s | 0.100 | n/a |" in md and "not available: no file" in md
    assert markdown({"methods": {"b": {"miou": 0.4}}}) == ""
