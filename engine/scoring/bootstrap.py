"""Bootstrap intervals over test frames for mIoU, and a paired bootstrap test between two methods.

A resample draws N frames with replacement (seeded); its mIoU is computed from the SUM of the drawn
frames' confusion matrices, exactly like the reported mIoU (metrics.py convention: ignore masked,
classes absent from truth and prediction skipped). The paired test resamples the same frames for both
methods, so frame difficulty cancels: the interval of mIoU(a) − mIoU(b) and a two-sided p-value
p = min(1, 2·min(P*(d ≤ 0), P*(d ≥ 0))) with the +1 correction ((count + 1) / (B + 1)).
Vectorised: a resample is a row of counts per frame, so all B resamples are one matrix product.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_BOOT = 2000
DEFAULT_SEED = 0


def miou_of_counts(mats: np.ndarray) -> np.ndarray:
    """mIoU of each (…, C, C) confusion matrix (rows truth): NaN-skipping mean of per-class IoU."""
    m = np.asarray(mats, dtype=np.float64)
    inter = np.diagonal(m, axis1=-2, axis2=-1)
    union = m.sum(-2) + m.sum(-1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
        return np.nanmean(iou, axis=-1)


def resample_indices(n: int, n_boot: int = DEFAULT_BOOT, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(n_boot, n) frame indices drawn with replacement (numpy default_rng(seed))."""
    if n < 1:
        raise ValueError("bootstrap needs at least one frame")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _resampled_mious(cms: np.ndarray, idx: np.ndarray) -> np.ndarray:
    n, c = cms.shape[0], cms.shape[-1]
    counts = np.zeros((idx.shape[0], n), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(idx.shape[0]), idx.shape[1]), idx.ravel()), 1.0)
    totals = counts @ cms.reshape(n, c * c).astype(np.float64)
    return miou_of_counts(totals.reshape(-1, c, c))


def _stack(cms: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    arr = np.asarray(cms)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(f"expected per-frame confusion matrices of shape (N, C, C), got {arr.shape}")
    return arr


def bootstrap_miou(cms: Sequence[np.ndarray] | np.ndarray, n_boot: int = DEFAULT_BOOT, seed: int = DEFAULT_SEED,
                   level: float = 0.95) -> dict[str, Any]:
    """Percentile interval of mIoU over frames: {"miou", "lo", "hi", "sd", "level", "n_boot", "seed", "n_frames"}."""
    arr = _stack(cms)
    boots = _resampled_mious(arr, resample_indices(len(arr), n_boot, seed))
    a = (1 - level) / 2
    return {"miou": float(miou_of_counts(arr.sum(0))), "lo": float(np.nanquantile(boots, a)),
            "hi": float(np.nanquantile(boots, 1 - a)), "sd": float(np.nanstd(boots)), "level": level,
            "n_boot": n_boot, "seed": seed, "n_frames": len(arr), "unit": "test frames"}


def paired_bootstrap(cms_a: Sequence[np.ndarray] | np.ndarray, cms_b: Sequence[np.ndarray] | np.ndarray,
                     n_boot: int = DEFAULT_BOOT, seed: int = DEFAULT_SEED, level: float = 0.95) -> dict[str, Any]:
    """Paired test of mIoU(a) − mIoU(b) on the same frames: diff, interval, two-sided p-value."""
    a_arr, b_arr = _stack(cms_a), _stack(cms_b)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired bootstrap needs the same frames and classes: {a_arr.shape} vs {b_arr.shape}")
    idx = resample_indices(len(a_arr), n_boot, seed)
    d = _resampled_mious(a_arr, idx) - _resampled_mious(b_arr, idx)
    d = d[~np.isnan(d)]
    q = (1 - level) / 2
    le, ge = int((d <= 0).sum()), int((d >= 0).sum())
    p = min(1.0, 2 * min((le + 1) / (len(d) + 1), (ge + 1) / (len(d) + 1)))
    return {"diff": float(miou_of_counts(a_arr.sum(0)) - miou_of_counts(b_arr.sum(0))),
            "lo": float(np.quantile(d, q)), "hi": float(np.quantile(d, 1 - q)), "p_value": p, "level": level,
            "n_boot": n_boot, "seed": seed, "n_frames": len(a_arr)}


def format_interval(ci: dict[str, Any] | None, digits: int = 3) -> str:
    """'0.704 [0.681, 0.725]' for a bootstrap_miou dict ('–' for None)."""
    if not ci:
        return "–"
    return f"{ci['miou']:.{digits}f} [{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"
