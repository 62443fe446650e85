"""The review flag: one threshold semantic for every method, and how good each method's flag is.

Semantic: "flag about P % of typical frames". Each method's per-frame score is computed on typical frames
that are neither test nor training frames (the run's unlabelled pool, else out-of-fold train frames); the
threshold is the (100 − P)th percentile of those scores. The CLI, the dashboard and `compare` all turn a
percentage into a threshold through `ReviewCalibration.threshold`, so "10 %" means the same for every method.

Quality (selective prediction, Geifman & El-Yaniv 2017): AUROC of the score for "this frame's mIoU is below
the test median" (and below a fixed bar), and the risk–coverage curve — mean per-frame mIoU of the frames
kept when the most uncertain ones are set aside — with its area AURC (risk = 1 − mIoU; lower is better).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ..errors import UserError

DEFAULT_PERCENT = 10.0
FIXED_BAR = 0.6


@dataclass
class ReviewCalibration:
    """Sorted per-frame scores of typical frames, and where they came from."""

    scores: np.ndarray
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = np.sort(np.asarray(self.scores, dtype=np.float64))
        if not len(self.scores):
            raise UserError("a review calibration needs the scores of at least one typical frame")

    def threshold(self, percent_flagged: float = DEFAULT_PERCENT) -> float:
        """The score above which about `percent_flagged` % of typical frames lie."""
        if not 0 <= percent_flagged <= 100:
            raise UserError(f"percent_flagged must be within 0..100, got {percent_flagged}")
        return float(np.quantile(self.scores, 1 - percent_flagged / 100))

    def flagged(self, score: float, percent_flagged: float = DEFAULT_PERCENT) -> bool:
        return bool(score > self.threshold(percent_flagged))

    def percentile(self, score: float) -> float:
        """% of typical frames with a lower or equal score."""
        return float(100.0 * np.searchsorted(self.scores, score, side="right") / len(self.scores))

    def to_dict(self) -> dict[str, Any]:
        return {"scores": [round(float(s), 6) for s in self.scores], "source": self.source, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ReviewCalibration | None:
        if not d or not d.get("scores"):
            return None
        return cls(np.asarray(d["scores"], float), str(d.get("source", "")), dict(d.get("meta", {})))


def review_decision(score: float | None, calib: ReviewCalibration | None,
                    percent_flagged: float = DEFAULT_PERCENT) -> dict[str, Any]:
    """What every front end reports for one frame: flagged, threshold, percentile and a plain sentence."""
    if score is None:
        return {"available": False, "review": None, "message": "This method gives no per-frame uncertainty score."}
    if calib is None:
        return {"available": False, "review": None, "score": score,
                "message": "Review flag not calibrated for this model (run `python -m engine calibrate`)."}
    thr = calib.threshold(percent_flagged)
    flag = score > thr
    pct = calib.percentile(score)
    words = ("Model unsure — please check this mask." if flag else "Confident.")
    return {"available": True, "review": bool(flag), "score": score, "threshold": thr, "percent_flagged": percent_flagged,
            "score_percentile": round(pct, 1),
            "message": f"{words} Its uncertainty is higher than on {pct:.0f} % of typical frames "
                       f"(flagged above the top {percent_flagged:g} %)."}


# ---- measuring the flag on labelled test frames -----------------------------------------------------
def frame_miou(pred: np.ndarray, truth: np.ndarray, num_classes: int, ignore: int = 255) -> float:
    """mIoU of one frame: classes absent from both truth and prediction skipped, ignore pixels masked."""
    p, t = np.asarray(pred).ravel(), np.asarray(truth).ravel()
    keep = t != ignore
    p, t = p[keep].astype(np.int64), t[keep].astype(np.int64)
    cm = np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)
    inter = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - inter
    return float((inter[union > 0] / union[union > 0]).mean()) if (union > 0).any() else float("nan")


def auroc(scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray) -> float | None:
    """Area under the ROC curve of `scores` for `positive` (None when one class is empty)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(positive, bool)
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, np.asarray(scores, float)))


def risk_coverage(scores: Sequence[float] | np.ndarray, mious: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Frames sorted most-confident first; for each coverage k/N the mean mIoU of the k kept frames.

    AURC = mean risk (1 − mean kept mIoU) over all coverages; also the oracle's (frames sorted by their true
    mIoU) and a random order's (the overall risk), the two ends a score can reach."""
    s, m = np.asarray(scores, float), np.asarray(mious, float)
    if len(s) != len(m) or not len(s):
        raise UserError(f"need one score per frame mIoU, got {len(s)} scores and {len(m)} mIoUs")
    order = np.lexsort((np.arange(len(s)), s))  # ties broken by frame order: deterministic
    kept = np.cumsum(m[order]) / np.arange(1, len(m) + 1)
    oracle = np.cumsum(np.sort(m)[::-1]) / np.arange(1, len(m) + 1)
    return {"coverage": (np.arange(1, len(m) + 1) / len(m)).round(4).tolist(), "miou_kept": kept.round(5).tolist(),
            "aurc": float(np.mean(1 - kept)), "aurc_oracle": float(np.mean(1 - oracle)),
            "aurc_random": float(1 - m.mean())}


def review_quality(scores: Sequence[float], mious: Sequence[float], fixed_bar: float = FIXED_BAR) -> dict[str, Any]:
    """AUROC for below-median and below-`fixed_bar` frames, risk–coverage and AURC."""
    m = np.asarray(mious, float)
    med = float(np.median(m))
    rc = risk_coverage(scores, m)
    return {"auroc_below_median": auroc(scores, m < med), "median_miou": med,
            "auroc_below_bar": auroc(scores, m < fixed_bar), "fixed_bar": fixed_bar,
            "n_below_bar": int((m < fixed_bar).sum()), "aurc": rc["aurc"], "aurc_oracle": rc["aurc_oracle"],
            "aurc_random": rc["aurc_random"], "risk_coverage": {k: rc[k] for k in ("coverage", "miou_kept")}}
