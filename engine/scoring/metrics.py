"""Segmentation metrics from one confusion matrix accumulated over a whole split.

Our convention: pixels labelled 255 (ignore) are masked out of everything, and a class absent from both
truth and prediction over the split is skipped in the mean (its IoU is undefined, reported as null).
ddpm-segmentation's convention (`reference=True`): ignore pixels are NOT removed from the predicted
side of unions, and absent classes score 0 in the mean; available for comparing with its numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.classes import IGNORE_INDEX
from ..errors import DataError


@dataclass
class ConfusionMatrix:
    """C×C counts, rows = truth, columns = prediction; plus predictions on ignore pixels per class."""

    num_classes: int
    matrix: np.ndarray = field(init=False)
    pred_on_ignore: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.pred_on_ignore = np.zeros(self.num_classes, dtype=np.int64)

    def update(self, pred: np.ndarray, truth: np.ndarray) -> "ConfusionMatrix":
        """Add one image (any shapes that match); truth 255 is ignored."""
        pred, truth = np.asarray(pred).ravel(), np.asarray(truth).ravel()
        if pred.shape != truth.shape:
            raise ValueError(f"prediction has {pred.size} pixels but the mask has {truth.size}")
        c = self.num_classes
        if pred.size and (pred.min() < 0 or pred.max() >= c):
            bad_ids = sorted(set(np.unique(pred[(pred < 0) | (pred >= c)]).tolist()))[:10]
            raise ValueError(f"predicted class ids {bad_ids} are outside the {c} classes (0..{c - 1}) of the masks: "
                             "the predictions come from a model with another class table")
        ign = truth == IGNORE_INDEX
        bad = truth[~ign]
        if bad.size and (bad.min() < 0 or bad.max() >= c):
            raise DataError(f"mask values {sorted(set(np.unique(bad[(bad < 0) | (bad >= c)]).tolist()))[:10]} "
                            f"are not class ids 0..{c - 1} or {IGNORE_INDEX}")
        self.matrix += np.bincount(truth[~ign].astype(np.int64) * c + pred[~ign], minlength=c * c).reshape(c, c)
        self.pred_on_ignore += np.bincount(pred[ign], minlength=c)
        return self

    def iou(self, reference: bool = False) -> np.ndarray:
        """Per-class IoU; NaN for classes absent from truth and prediction (0 with reference=True)."""
        m = self.matrix.astype(np.float64)
        inter = np.diag(m)
        union = m.sum(0) + m.sum(1) - inter
        if reference:
            union = union + self.pred_on_ignore
            return np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)

    def dice(self) -> np.ndarray:
        m = self.matrix.astype(np.float64)
        inter = np.diag(m)
        denom = m.sum(0) + m.sum(1)
        return np.where(denom > 0, 2 * inter / np.maximum(denom, 1), np.nan)

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")


def _mean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def summarize(cm: ConfusionMatrix, class_names: list[str], reference: bool = False) -> dict[str, Any]:
    """The metrics JSON (README "Methods compared"; miou, per_class_iou, dice, pixel_accuracy, confusion)."""
    iou, dice = cm.iou(reference), cm.dice()
    return {
        "miou": _mean(iou),
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(class_names, iou)},
        "dice": _mean(dice),
        "per_class_dice": {n: (None if np.isnan(v) else float(v)) for n, v in zip(class_names, dice)},
        "pixel_accuracy": cm.pixel_accuracy(),
        "confusion": cm.matrix.tolist(),
        "convention": "reference" if reference else "ignore-masked, absent classes skipped",
    }
