"""Per-frame scores of a compared method and its review calibration file (METHOD_DIR/review_calibration.json).

Every method gets a per-frame score: conddiff its own sample variance (mean of the top 10 % pixels), every
other method the class-averaged entropy of its probabilities (engine/uncertainty/frame_scores.py; the DDPM
ensemble's own score is that too). Conditional diffusion's score depends on the number of samples K, so its
calibration is kept per K (K = 1..k_max, from the first K of k_max samples of one seeded draw — the same seed
the Segment page and `segment` use). Each calibration names its score (meta "score"); one computed for
another score is ignored, so a threshold is never taken from another score's scale.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_json_atomic
from .frame_scores import REVIEW_SCORE, review_score
from .review import ReviewCalibration

FILE_NAME = "review_calibration.json"
VARIANCE = "sample variance, top 10 % pixels"


def frame_score(out: Any) -> float:
    """A MethodOutput's per-frame score (its own, else the review score of its probabilities: frame_scores)."""
    return float(out.score) if out.score is not None else review_score(out.probs)


def score_id(method_name: str) -> str:
    """Which score a method's review calibration must have been computed for."""
    return VARIANCE if method_name == "conddiff" else REVIEW_SCORE


def matches(calib: ReviewCalibration | dict[str, Any] | None, method_name: str) -> bool:
    """Whether a saved calibration was computed for the method's current score (files written before scores
    were named are accepted only for conddiff, whose score has not changed)."""
    if calib is None:
        return False
    meta = calib.meta if isinstance(calib, ReviewCalibration) else (calib.get("meta") or {})
    return meta.get("score", VARIANCE if method_name == "conddiff" else None) == score_id(method_name)


def variance_score(p: torch.Tensor) -> float:
    """conddiff's score for (K, C, H, W) sample probabilities: mean of the top 10 % summed-variance pixels."""
    var = p.var(dim=0, unbiased=False).sum(dim=0).flatten()
    return float(var.topk(max(1, math.ceil(0.1 * var.numel()))).values.mean())


def typical_scores(method: Any, images: torch.Tensor, k_max: int = 10) -> dict[str, list[float]]:
    """Scores of typical frames: {"default": [...]} and, for conddiff, {"k1": [...], ..., "k{k_max}": [...]}."""
    out: dict[str, list[float]] = {"default": []}
    with torch.inference_mode():
        for img in images:
            if method.name == "conddiff":
                p = method.sample_probs(img.float(), k_max, seed=0)
                for k in range(1, k_max + 1):
                    out.setdefault(f"k{k}", []).append(variance_score(p[:k]))
                out["default"].append(out[f"k{int(method.config['samples'])}"][-1]
                                      if int(method.config["samples"]) <= k_max else variance_score(p))
            else:
                out["default"].append(frame_score(method.predict(img.float())))
    return out


def frames_digest(images: torch.Tensor) -> str:
    """Identity of the typical frames a calibration was computed on (a later run may reuse it)."""
    from ..methods.base import tensor_digest

    return tensor_digest(images)


def calibrations(scores: dict[str, list[float]], source: str, digest: str = "", score: str = "") -> dict[str, Any]:
    meta = {**({"frames_digest": digest} if digest else {}), **({"score": score} if score else {})}
    return {key: ReviewCalibration(np.asarray(v), source, dict(meta)).to_dict() for key, v in scores.items()}


def save(method_dir: str | Path, calib: dict[str, Any]) -> Path:
    path = Path(method_dir) / FILE_NAME
    write_json_atomic(path, {"format_version": 1, "calibrations": calib})
    return path


def load(method_dir: str | Path | None, method_name: str | None = None) -> dict[str, ReviewCalibration]:
    """{key: ReviewCalibration} from a method directory ({} when absent or unreadable); with `method_name`,
    only the calibrations computed for that method's current score."""
    if method_dir is None:
        return {}
    path = Path(method_dir) / FILE_NAME
    try:
        raw = json.loads(path.read_text())["calibrations"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return {}
    out = {}
    for key, d in raw.items():
        c = ReviewCalibration.from_dict(d)
        if c is not None and (method_name is None or matches(c, method_name)):
            out[key] = c
    return out


def for_samples(calibs: dict[str, ReviewCalibration], k: int | None) -> ReviewCalibration | None:
    """The calibration for K samples (conddiff), else the method's default one."""
    if k is not None and f"k{k}" in calibs:
        return calibs[f"k{k}"]
    return calibs.get("default")
