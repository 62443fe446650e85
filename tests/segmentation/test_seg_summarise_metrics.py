"""Ensemble summaries (JS, entropy, score, votes) and metrics against naive references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.scoring.metrics import ConfusionMatrix, summarize
from engine.segmentation.pixel_classifier import summarise


# ---- summarise ------------------------------------------------------------------------------------
def test_js_nonnegative_and_zero_when_members_agree() -> None:
    logits = torch.randn(5, 4, 9, 7, generator=torch.Generator().manual_seed(0)) * 3
    pred = summarise(logits)
    assert pred.js.shape == (9, 7) and bool((pred.js >= 0).all()) and float(pred.js.max()) > 0.01
    same = summarise(logits[:1].expand(5, -1, -1, -1))
    assert float(same.js.abs().max()) < 1e-5 and same.js_score < 1e-5


def test_js_matches_definition() -> None:
    logits = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    p = logits.softmax(1).numpy()
    h = lambda q: -(q * np.log(q)).sum(0)  # noqa: E731
    ref = h(p.mean(0)) - np.mean([h(p[e]) for e in range(3)], axis=0)
    np.testing.assert_allclose(summarise(logits).js.numpy(), ref, atol=1e-5)
    np.testing.assert_allclose(summarise(logits).entropy.numpy(), h(p.mean(0)), atol=1e-5)


def test_entropy_of_uniform_is_log_c() -> None:
    pred = summarise(torch.zeros(3, 6, 4, 4))
    torch.testing.assert_close(pred.entropy, torch.full((4, 4), math.log(6)))


def test_js_score_is_mean_of_top_ten_percent() -> None:
    logits = torch.randn(4, 3, 10, 13, generator=torch.Generator().manual_seed(2)) * 2
    pred = summarise(logits)
    js = np.sort(pred.js.numpy().ravel())[::-1]
    k = math.ceil(0.1 * js.size)  # 13 of 130 pixels
    assert pred.js_score == pytest.approx(float(js[:k].mean()), rel=1e-6)


def test_votes_are_the_majority_and_probs_the_mean() -> None:
    # 3 members at one pixel: two say class 2 (weakly), one says class 0 (very strongly)
    logits = torch.zeros(3, 3, 1, 1)
    logits[0, 2], logits[1, 2], logits[2, 0] = 0.5, 0.5, 20.0
    pred = summarise(logits)
    assert int(pred.votes) == 2 and int(pred.labels) == 0
    torch.testing.assert_close(pred.probs, logits.softmax(1).mean(0))


# ---- metrics --------------------------------------------------------------------------------------
def _naive(preds, truths, c):
    inter, union, pred_n, true_n, correct, total = [0] * c, [0] * c, [0] * c, [0] * c, 0, 0
    for pr, tr in zip(preds, truths):
        for p, t in zip(pr.ravel().tolist(), tr.ravel().tolist()):
            if t == 255:
                continue
            total += 1
            correct += p == t
            pred_n[p] += 1
            true_n[t] += 1
            if p == t:
                inter[t] += 1
    for k in range(c):
        union[k] = pred_n[k] + true_n[k] - inter[k]
    iou = [inter[k] / union[k] if union[k] else None for k in range(c)]
    dice = [2 * inter[k] / (pred_n[k] + true_n[k]) if pred_n[k] + true_n[k] else None for k in range(c)]
    return iou, dice, correct / total


def test_metrics_match_a_python_loop() -> None:
    rng = np.random.default_rng(0)
    c = 5
    preds = [rng.integers(0, c - 1, (7, 9)) for _ in range(3)]  # class 4 never predicted ...
    truths = [rng.integers(0, c - 1, (7, 9)) for _ in range(3)]  # ... nor present: skipped
    for t in truths:
        t[rng.random(t.shape) < 0.2] = 255
    cm = ConfusionMatrix(c)
    for p, t in zip(preds, truths):
        cm.update(p, t)
    iou, dice, acc = _naive(preds, truths, c)
    res = summarize(cm, list("abcde"))
    assert res["per_class_iou"]["e"] is None and iou[4] is None
    assert [res["per_class_iou"][n] for n in "abcd"] == pytest.approx(iou[:4])
    assert res["miou"] == pytest.approx(np.mean(iou[:4]))
    assert res["dice"] == pytest.approx(np.mean(dice[:4]))
    assert res["pixel_accuracy"] == pytest.approx(acc)
    assert np.array(res["confusion"]).sum() == sum(int((t != 255).sum()) for t in truths)


def test_reference_convention_scores_absent_classes_zero() -> None:
    pred = np.array([[0, 1], [1, 2]])
    truth = np.array([[0, 1], [255, 255]])
    cm = ConfusionMatrix(4).update(pred, truth)
    ours = summarize(cm, list("abcd"))
    ref = summarize(cm, list("abcd"), reference=True)
    assert ours["per_class_iou"] == {"a": 1.0, "b": 1.0, "c": None, "d": None} and ours["miou"] == 1.0
    # reference: predictions on ignore pixels count in unions, absent classes score 0
    assert ref["per_class_iou"] == {"a": 1.0, "b": 0.5, "c": 0.0, "d": 0.0}
    assert ref["miou"] == pytest.approx(1.5 / 4)


def test_dice_and_accuracy_small_case() -> None:
    cm = ConfusionMatrix(2).update(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    res = summarize(cm, ["x", "y"])
    assert res["per_class_dice"] == {"x": pytest.approx(2 / 3), "y": pytest.approx(0.8)}
    assert res["pixel_accuracy"] == 0.75 and res["miou"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_out_of_range_values_are_errors() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"\[7\]"):
        cm.update(np.zeros(4, int), np.array([0, 1, 7, 255]))
    with pytest.raises(ValueError, match="predicted"):
        cm.update(np.array([0, 3]), np.array([0, 1]))
    with pytest.raises(ValueError, match="pixels"):
        cm.update(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(ValueError):
        cm.update(np.zeros(2, int), np.array([-1, 0]))
    assert cm.matrix.sum() == 0  # nothing half-added
