"""The review score (class-averaged entropy + 1 − expected mIoU) and the score identity every review calibration carries."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.segmentation.pixel_classifier import summarise, summarise_batch
from engine.uncertainty import method_review
from engine.uncertainty.frame_scores import (
    REVIEW_SCORE,
    class_entropy_score,
    class_entropy_scores,
    expected_mious,
    review_score,
    review_scores,
)


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


def _naive_expected_miou(p: np.ndarray) -> float:
    lab, ious = p.argmax(0), []
    for c in range(p.shape[0]):
        m = lab == c
        if not m.any() and p[c].sum() < 1:
            continue
        inter = p[c][m].sum()
        ious.append(inter / (m.sum() + p[c].sum() - inter))
    return float(np.mean(ious))


def test_expected_miou_matches_a_naive_loop_and_a_certain_mask_expects_one() -> None:
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(3, 4, 8, 6, generator=g) * 3, dim=1)
    probs[2, 3] = 1e-4  # class 3 neither predicted nor expected on a pixel: skipped
    probs[2] /= probs[2].sum(0, keepdim=True)
    got = expected_mious(probs)
    for n in range(3):
        assert float(got[n]) == pytest.approx(_naive_expected_miou(probs[n].numpy()), rel=1e-5)
        assert review_score(probs[n]) == pytest.approx(float(class_entropy_scores(probs[n:n + 1])[0]) + 1
                                                      - float(got[n]), rel=1e-5)
    certain = torch.nn.functional.one_hot(torch.randint(0, 4, (8, 6), generator=g), 4).permute(2, 0, 1).float()
    assert float(expected_mious(certain[None])[0]) == pytest.approx(1.0)
    assert float(review_scores(certain[None])[0]) == pytest.approx(0.0, abs=1e-6)


def test_an_unsure_small_region_outweighs_unsure_boundaries() -> None:
    """Two frames with the same number of unsure pixels: spread along a large region's edge (every frame has
    edges) vs filling a small region (a thin instrument barely found). Pixel averages cannot tell them apart;
    the class average flags the small region."""
    sure, unsure = torch.tensor([0.98, 0.0199, 0.0001]), torch.tensor([0.55, 0.4499, 0.0001])
    edge = sure[:, None, None].repeat(1, 20, 20)
    edge[:, :, 10] = unsure[:, None]  # 20 pixels on the boundary line, torn between its two sides
    edge[:, :, 11:] = sure[[1, 0, 2]][:, None, None]  # the right half is class 1
    small = sure[:, None, None].repeat(1, 20, 20)
    small[:, :, 11:] = sure[[1, 0, 2]][:, None, None]
    small[:, 0:4, 0:5] = unsure[[1, 2, 0]][:, None, None]  # a 4×5 region of class 2, all unsure
    ent = lambda p: float(-(p * p.log()).sum(0).mean())  # noqa: E731
    assert ent(edge) == pytest.approx(ent(small), rel=1e-6)
    assert class_entropy_score(small) > 2 * class_entropy_score(edge)
    assert review_score(small) > 2 * review_score(edge)


def test_ensemble_score_is_the_review_score_of_its_calibrated_probabilities() -> None:
    logits = torch.randn(2, 4, 5, 6, 7, generator=torch.Generator().manual_seed(3)) * 3
    for t in (1.0, 0.5):
        _, _, scores = summarise_batch(logits, temperature=t)
        for n in range(2):
            pred = summarise(logits[n], temperature=t)
            assert pred.score == pytest.approx(review_score(pred.probs), rel=1e-6)
            assert float(scores[n]) == pytest.approx(pred.score, rel=1e-5)
            assert pred.js_score == pytest.approx(float(pred.js.flatten().topk(5).values.mean()), rel=1e-6)


def test_calibrations_of_another_score_are_not_reused(tmp_path: Path) -> None:
    scores = {"default": [0.1, 0.2, 0.3]}
    method_review.save(tmp_path, method_review.calibrations(scores, "old", "d"))  # no score named: old file
    assert method_review.load(tmp_path, "ddpm") == {}  # the ensemble's old JS thresholds are dropped
    assert set(method_review.load(tmp_path, "conddiff")) == {"default"}  # conddiff's variance did not change
    method_review.save(tmp_path, method_review.calibrations(scores, "new", "d", REVIEW_SCORE))
    assert set(method_review.load(tmp_path, "mae")) == {"default"}
    assert method_review.load(tmp_path, "conddiff") == {}


def test_classifier_ignores_a_review_calibration_of_another_score(tmp_path: Path) -> None:
    from engine.segmentation.classifier import current_review

    old = {"scores": [0.1, 0.2], "source": "x", "meta": {"score": "ensemble JS, mean of the top 10 % pixels"}}
    new = {**old, "meta": {"score": REVIEW_SCORE}}
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
