"""`calibrate`: a temperature and a review calibration for a fitted pixel-classifier ensemble, without refitting it.

Held-out labelled pixels come from the TRAIN frames by K-fold cross-fitting: for each fold an ensemble with
the classifier's own FitConfig is fitted on the other folds and predicts the held-out frames, so every train
pixel gets an out-of-fold prediction (test frames are never read). The temperature minimising the NLL of
those pixels is saved in CLF/config.json; the ensemble's weights are untouched. The review calibration is
the per-frame score of typical unlabelled frames (the pool) — or, without a pool, of the out-of-fold frames.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_json_atomic
from ..segmentation.classifier_training import fit_ensemble
from ..segmentation.pixel_classifier import summarise
from ..segmentation.augmentation import AugmentedMaps
from ..segmentation.self_training import ensemble_logits
from .calibration import Reliability, apply_temperature, fit_temperature, nll, pixels
from .frame_scores import REVIEW_SCORE
from .review import ReviewCalibration
from ..errors import UserError

log = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]


def out_of_fold(maps: list[torch.Tensor], masks: torch.Tensor, num_classes: int, cfg: Any, folds: int = 4,
                progress: Progress | None = None,
                flip_maps: list[torch.Tensor] | None = None,
                augmented: AugmentedMaps | None = None) -> tuple[list[torch.Tensor], list[float]]:
    """Per train frame: the raw mean probabilities (C,H,W) and review score (at T = 1) of an ensemble that did
    not see it. With `flip_maps` (maps of the mirrored frames) the mirrored view joins the ensemble, exactly as
    the classifier predicts with flip averaging, so the temperature is fitted on the outputs it is applied to;
    `augmented` (maps of the frames' augmented copies) joins each fold's fit, its held-out frames' copies excepted."""
    n = len(masks)
    if n < 2:
        raise UserError(f"cross-fitting needs at least 2 labelled train frames, got {n}")
    folds = min(folds, n)
    probs: list[torch.Tensor | None] = [None] * n
    scores: list[float] = [0.0] * n
    for k in range(folds):
        held = list(range(k, n, folds))
        keep = [i for i in range(n) if i not in held]
        fold_maps, fold_masks = [m[keep] for m in maps], masks[keep]
        if augmented is not None:
            fold_maps, fold_masks = augmented.with_frames(fold_maps, fold_masks, torch.as_tensor(keep))
        model, _ = fit_ensemble(fold_maps, fold_masks, num_classes, cfg)
        for i in held:
            logits = ensemble_logits(model, [m[i] for m in maps], (int(masks.shape[-2]), int(masks.shape[-1])),
                                     [m[i] for m in flip_maps] if flip_maps is not None else None)
            pred = summarise(logits)
            probs[i], scores[i] = pred.probs, pred.score
        if progress:
            progress(k + 1, folds, f"fold {k + 1}/{folds}")
    return [p for p in probs if p is not None], scores


def temperature_report(probs: list[torch.Tensor], truths: list[np.ndarray], seed: int = 0) -> dict[str, Any]:
    """Fit T on all out-of-fold pixels; also a two-way split of the frames (fit on one half, score the other)
    so the ECE / NLL gain is reported on pixels the temperature did not see."""
    P, y = pixels(probs, truths)
    t = fit_temperature(P, y)
    rel_before, rel_after = Reliability(), Reliability()
    for p, tr in zip(probs, truths):
        rel_before.update(p, tr)
        rel_after.update(apply_temperature(p, t), tr)
    order = np.random.default_rng(seed).permutation(len(probs))
    halves = [order[: len(order) // 2], order[len(order) // 2:]]
    split = []
    for a, b in (halves, halves[::-1]):
        if not len(a) or not len(b):
            continue
        ta = fit_temperature(*pixels([probs[i] for i in a], [truths[i] for i in a]))
        Pb, yb = pixels([probs[i] for i in b], [truths[i] for i in b])
        eb0, eb1 = Reliability(), Reliability()
        for i in b:
            eb0.update(probs[i], truths[i])
            eb1.update(apply_temperature(probs[i], ta), truths[i])
        split.append({"temperature": ta, "nll_before": nll(Pb, yb), "nll_after": nll(Pb, yb, ta),
                      "ece_before": eb0.ece, "ece_after": eb1.ece})
    return {"temperature": t, "n_pixels": len(y), "n_frames": len(probs),
            "nll_before": nll(P, y), "nll_after": nll(P, y, t), "ece_before": rel_before.ece, "ece_after": rel_after.ece,
            "reliability_before": rel_before.to_dict(), "reliability_after": rel_after.to_dict(),
            "split_half_check": split}


def calibrate_classifier(clf: Any, ds: Any, split: str = "train", folds: int = 4, pool: torch.Tensor | None = None,
                         pool_source: str = "", progress: Progress | None = None) -> dict[str, Any]:
    """Set clf.temperature / calibration / review from out-of-fold train predictions (+ the pool's scores)."""
    from ..segmentation.classifier import load_labelled

    t0 = time.time()
    images, masks, stems = load_labelled(ds, split, clf.run.image_size, clf.label_size)
    maps = clf.extractor().many(images)
    flip_maps = clf.extractor().many(images.flip(-1)) if clf.fit_config.flip_tta else None
    # the copies the classifier was fitted with (same frames, copies, seed)
    augmented = AugmentedMaps.extract(images, masks, clf.fit_config.augment, clf.fit_config.seed,
                                      clf.extractor().many) if clf.fit_config.augment > 0 else None
    probs, oof_scores = out_of_fold(maps, masks, clf.classes.num_classes, clf.fit_config, folds, progress, flip_maps,
                                    augmented)
    report = temperature_report(probs, [m.numpy() for m in masks])
    report.update({"method": f"{min(folds, len(stems))}-fold cross-fitting on the {len(stems)} {split} frames",
                   "fitted_stems": stems})
    if pool is not None and len(pool):
        scores = []
        with torch.inference_mode():
            for i, img in enumerate(pool):
                scores.append(clf.predict_tensor(img).score)
                if progress and (i + 1) % 20 == 0:
                    progress(i + 1, len(pool), "typical frames")
        review = ReviewCalibration(np.asarray(scores), f"{len(pool)} unlabelled frames ({pool_source})",
                                   {"score": REVIEW_SCORE})
    else:
        review = ReviewCalibration(np.asarray(oof_scores), f"{len(stems)} out-of-fold {split} frames",
                                   {"score": REVIEW_SCORE})
    clf.temperature = float(report["temperature"])
    clf.calibration = {k: v for k, v in report.items() if k != "temperature"}
    clf.calibration["seconds"] = round(time.time() - t0, 1)
    clf.review = review.to_dict()
    return report


def save_calibration(clf: Any, path: str | Path) -> Path:
    """Write only the calibration keys into CLF/config.json (weights.pt is not rewritten)."""
    cfg_path = Path(path) / "config.json"
    meta = json.loads(cfg_path.read_text())
    meta.update(clf.calibration_fields())
    write_json_atomic(cfg_path, meta)
    return cfg_path
