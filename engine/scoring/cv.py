"""k-fold cross-validation over labelled TRAIN frames: how choices are scored without touching test frames.

Folds split frames (never pixels of one frame across folds), seeded. Each fold fits a pixel-classifier
ensemble on the other folds' frames and predicts its own; the out-of-fold predictions of every train
frame go into ONE confusion matrix, so the CV mIoU is computed exactly like a test mIoU (metrics.py).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..segmentation.augmentation import AugmentedMaps
from ..segmentation.classifier_training import FitConfig, fit_ensemble
from .metrics import ConfusionMatrix, summarize
from ..segmentation.pixel_classifier import summarise
from ..segmentation.self_training import ensemble_logits, fit_self_trained

DEFAULT_FOLDS = 4
Progress = Callable[[int, int, str], None]


def kfold_indices(n: int, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, val_idx) for each of k folds of n frames: a seeded permutation cut into k near-equal parts."""
    if n < 2:
        raise DataError(f"cross-validation needs at least 2 labelled train frames, got {n}")
    if k < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, got {k}")
    k = min(k, n)
    perm = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(perm, k)
    return [(np.sort(np.concatenate([p for j, p in enumerate(parts) if j != i])), np.sort(parts[i]))
            for i in range(k)]


def cv_score(maps: Sequence[torch.Tensor], masks: torch.Tensor, class_names: list[str], fit_cfg: FitConfig,
             folds: int = DEFAULT_FOLDS, seed: int = 0, keep_predictions: bool = False,
             flip_maps: Sequence[torch.Tensor] | None = None, pool_maps: Sequence[torch.Tensor] | None = None,
             augmented: AugmentedMaps | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Out-of-fold metrics of an ensemble on stacked native maps (N, C_k, h_k, w_k) and masks (N, H, W).

    flip_maps (maps of the mirrored frames) turn on flip averaging; pool_maps (unlabelled pool frames) turn
    on self-training inside each fold (engine/segmentation/self_training.py): each fold's teacher sees only that fold's
    labelled frames, exactly as the final classifier will; `augmented` (maps of augmented copies) adds to each fold
    the copies of that fold's training frames only, never of the frames it predicts. The result is `summarize`'s dict plus
    `cv` (folds, seed, per-fold mIoU) and, with keep_predictions, `_predictions` (uint8 per frame, in order)
    and `_scores` (their uncertainty scores).
    """
    n, n_cls = len(masks), len(class_names)
    splits = kfold_indices(n, folds, seed)
    out_hw = (int(masks.shape[-2]), int(masks.shape[-1]))
    cm = ConfusionMatrix(n_cls)
    per_frame: list[np.ndarray | None] = [None] * n
    scores: list[float] = [float("nan")] * n
    fold_miou = []
    for f, (tr, va) in enumerate(splits):
        tr_t = torch.as_tensor(tr)
        fold_maps, fold_masks = [m[tr_t] for m in maps], masks[tr_t]
        if augmented is not None:
            fold_maps, fold_masks = augmented.with_frames(fold_maps, fold_masks, tr_t)
        if pool_maps is not None:
            model, _ = fit_self_trained(fold_maps, fold_masks, pool_maps, n_cls, fit_cfg)
        else:
            model, _ = fit_ensemble(fold_maps, fold_masks, n_cls, fit_cfg)
        fold_cm = ConfusionMatrix(n_cls)
        for i in va.tolist():
            logits = ensemble_logits(model, [m[i] for m in maps], out_hw,
                                     [m[i] for m in flip_maps] if flip_maps is not None else None)
            summary = summarise(logits)
            labels = summary.labels.numpy()
            scores[i] = float(summary.score)
            truth = masks[i].numpy()
            cm.update(labels, truth)
            fold_cm.update(labels, truth)
            per_frame[i] = labels.astype(np.uint8)
        fold_miou.append(summarize(fold_cm, class_names)["miou"])
        if progress:
            progress(f + 1, len(splits), f"fold {f + 1}/{len(splits)}: mIoU {fold_miou[-1]:.3f}")
    out = summarize(cm, class_names)
    out["cv"] = {"folds": len(splits), "seed": seed, "n_frames": n, "fold_miou": fold_miou}
    if keep_predictions:
        out["_predictions"] = per_frame
        out["_scores"] = scores  # each out-of-fold frame's uncertainty score (Prediction.score)
    return out
