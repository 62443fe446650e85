"""Per-frame scores of a compared method and its review calibration file (METHOD_DIR/review_calibration.json).

Every method gets a per-frame score: its own (ensemble JS, conddiff's sample variance) or, for methods that
give none, the mean entropy of its 10 % least sure pixels. Conditional diffusion's score depends on the
number of samples K, so its calibration is kept per K (K = 1..k_max, from the first K of k_max samples of
one seeded draw — the same seed the Segment page and `segment` use).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_json_atomic
from .review import ReviewCalibration, entropy_score

FILE_NAME = "review_calibration.json"


def frame_score(out: Any) -> float:
    """A MethodOutput's per-frame score (its own, else the top-10 % entropy of its probabilities)."""
    return float(out.score) if out.score is not None else entropy_score(out.probs)


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


def calibrations(scores: dict[str, list[float]], source: str, digest: str = "") -> dict[str, Any]:
    return {key: ReviewCalibration(np.asarray(v), source, {"frames_digest": digest} if digest else {}).to_dict()
            for key, v in scores.items()}


def save(method_dir: str | Path, calib: dict[str, Any]) -> Path:
    path = Path(method_dir) / FILE_NAME
    write_json_atomic(path, {"format_version": 1, "calibrations": calib})
    return path


def load(method_dir: str | Path | None) -> dict[str, ReviewCalibration]:
    """{key: ReviewCalibration} from a method directory ({} when absent or unreadable)."""
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
        if c is not None:
            out[key] = c
    return out


def for_samples(calibs: dict[str, ReviewCalibration], k: int | None) -> ReviewCalibration | None:
    """The calibration for K samples (conddiff), else the method's default one."""
    if k is not None and f"k{k}" in calibs:
        return calibs[f"k{k}"]
    return calibs.get("default")
