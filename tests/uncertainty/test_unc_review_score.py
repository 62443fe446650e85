"""The review score (class-averaged entropy) and the score identity every review calibration carries."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.pixel_classifier import summarise, summarise_batch
from engine.uncertainty import method_review
from engine.uncertainty.frame_scores import CLASS_ENTROPY, class_entropy_score, class_entropy_scores


def _naive(p: np.ndarray) -> float:
    """Per predicted class: mean entropy of its pixels; then the mean over the predicted classes."""
    ent = -(p * np.log(np.clip(p, 1e-12, None))).sum(0)
    lab = p.argmax(0)
    return float(np.mean([ent[lab == c].mean() for c in range(p.shape[0]) if (lab == c).any()]))


def test_class_entropy_matches_a_naive_loop_and_batches() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(4, 5, 9, 7, generator=g) * 2, dim=1)
    probs[1, :, :, :] = torch.softmax(torch.tensor([3.0, 0, 0, 0, 0]), 0)[:, None, None]  # one class only
    batch = class_entropy_scores(probs)
    for n in range(4):
        assert float(batch[n]) == pytest.approx(_naive(probs[n].numpy()), rel=1e-5)
        assert class_entropy_score(probs[n]) == pytest.approx(float(batch[n]), rel=1e-6)
    certain = torch.zeros(3, 4, 4)
    certain[0] = 1.0
    assert class_entropy_score(certain) == pytest.approx(0.0, abs=1e-9)


def test_an_unsure_small_region_outweighs_unsure_boundaries() -> None:
    """Two frames with the same number of unsure pixels: spread along a large region's edge (every frame has
    edges) vs filling a small region (a thin instrument barely found). Pixel averages cannot tell them apart;
    the class average flags the small region."""
    sure, unsure = torch.tensor([0.98, 0.01, 0.01]), torch.tensor([0.5, 0.1, 0.4])
    edge = sure[:, None, None].repeat(1, 20, 20)
    edge[:, :, 10] = unsure[:, None]  # 20 unsure pixels of class 0 on a boundary line
    edge[:, :, 11:] = sure[[1, 0, 2]][:, None, None]  # the right half is class 1
    small = sure[:, None, None].repeat(1, 20, 20)
    small[:, :, 11:] = sure[[1, 0, 2]][:, None, None]
    small[:, 0:4, 0:5] = unsure[[2, 1, 0]][:, None, None]  # a 4×5 region of class 2, all unsure
    ent = lambda p: float(-(p * p.log()).sum(0).mean())  # noqa: E731
    assert ent(edge) == pytest.approx(ent(small), rel=1e-6)
    assert class_entropy_score(small) > 2 * class_entropy_score(edge)


def test_ensemble_score_is_the_class_entropy_of_its_calibrated_probabilities() -> None:
    logits = torch.randn(2, 4, 5, 6, 7, generator=torch.Generator().manual_seed(3)) * 3
    for t in (1.0, 0.5):
        _, _, scores = summarise_batch(logits, temperature=t)
        for n in range(2):
            pred = summarise(logits[n], temperature=t)
            assert pred.score == pytest.approx(class_entropy_score(pred.probs), rel=1e-6)
            assert float(scores[n]) == pytest.approx(pred.score, rel=1e-5)
            assert pred.js_score == pytest.approx(float(pred.js.flatten().topk(5).values.mean()), rel=1e-6)


def test_calibrations_of_another_score_are_not_reused(tmp_path: Path) -> None:
    scores = {"default": [0.1, 0.2, 0.3]}
    method_review.save(tmp_path, method_review.calibrations(scores, "old", "d"))  # no score named: old file
    assert method_review.load(tmp_path, "ddpm") == {}  # the ensemble's old JS thresholds are dropped
    assert set(method_review.load(tmp_path, "conddiff")) == {"default"}  # conddiff's variance did not change
    method_review.save(tmp_path, method_review.calibrations(scores, "new", "d", CLASS_ENTROPY))
    assert set(method_review.load(tmp_path, "mae")) == {"default"}
    assert method_review.load(tmp_path, "conddiff") == {}


def test_classifier_ignores_a_review_calibration_of_another_score(tmp_path: Path) -> None:
    from engine.classifier import current_review

    old = {"scores": [0.1, 0.2], "source": "x", "meta": {"score": "ensemble JS, mean of the top 10 % pixels"}}
    new = {**old, "meta": {"score": CLASS_ENTROPY}}
    assert current_review(old, tmp_path / "config.json") is None
    assert current_review(new, tmp_path / "config.json") == new
    assert current_review(None, tmp_path / "config.json") is None


def test_shipped_conddiff_calibration_covers_k_1_to_10() -> None:
    path = Path(__file__).resolve().parents[2] / "assets/demo_methods/conddiff" / method_review.FILE_NAME
    if not path.is_file():
        pytest.skip("conddiff not calibrated in assets")
    calibs = method_review.load(path.parent, "conddiff")
    assert {f"k{k}" for k in range(1, 11)} <= set(calibs) and "default" in calibs
    assert all(len(c.scores) == 60 for c in calibs.values())
    assert json.loads(path.read_text())["calibrations"]["k5"]["scores"] == \
        json.loads(path.read_text())["calibrations"]["default"]["scores"]  # default = its configured K = 5
