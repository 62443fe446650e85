"""Two techniques on top of the study's recipe: test-time flip averaging and self-training on the pool.

Flip averaging: the ensemble also predicts the horizontally mirrored frame; those logits are mirrored back
and stacked with the plain ones as extra members, so the vote, the mean softmax and the uncertainty
maps cover both views (engine/pixel_classifier.summarise).
Self-training (pseudo-labels, as in e.g. Lee 2013 / FixMatch's confidence threshold): the ensemble fitted
on the labelled frames predicts `self_train` unlabelled pool frames; pixels whose mean max probability
reaches `pseudo_threshold` keep their predicted class, the rest are ignored (255); a fresh ensemble is then
fitted on labelled + pseudo-labelled frames. The pool never contains test frames (compare.load_pool).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .classifier_training import FitConfig, fit_ensemble
from ..data.classes import IGNORE_INDEX as IGNORE
from ..errors import DataError
from .pixel_classifier import EnsembleMLP

log = logging.getLogger(__name__)


def ensemble_logits(model: EnsembleMLP, maps: Sequence[torch.Tensor], out_hw: tuple[int, int],
                    flip_maps: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """(members, C, H, W) logits of one frame's maps; with flip_maps (maps of the mirrored frame) the mirrored
    view's logits, mirrored back, are appended as more members."""
    logits = model.predict_logits([m.float() for m in maps], out_hw)
    if flip_maps is None:
        return logits
    flipped = model.predict_logits([m.float() for m in flip_maps], out_hw).flip(-1)
    return torch.cat([logits, flipped])


@torch.no_grad()
def pseudo_labels(model: EnsembleMLP, pool_maps: Sequence[torch.Tensor], out_hw: tuple[int, int],
                  threshold: float) -> tuple[torch.Tensor, dict[str, Any]]:
    """(P, H, W) long masks of pool frames: the ensemble's class where its mean max probability ≥ threshold."""
    masks, kept = [], 0
    for i in range(len(pool_maps[0])):
        probs = ensemble_logits(model, [m[i] for m in pool_maps], out_hw).softmax(dim=1).mean(dim=0)
        conf, cls = probs.max(dim=0)
        m = torch.where(conf >= threshold, cls, torch.full_like(cls, IGNORE))
        kept += int((m != IGNORE).sum())
        masks.append(m)
    total = len(masks) * out_hw[0] * out_hw[1]
    return torch.stack(masks), {"pool_frames": len(masks), "pseudo_pixel_share": kept / max(total, 1)}


def fit_self_trained(maps: Sequence[torch.Tensor], masks: torch.Tensor, pool_maps: Sequence[torch.Tensor],
                     num_classes: int, cfg: FitConfig,
                     progress: Callable[[int, int, str], None] | None = None,
                     device: str | torch.device | None = None) -> tuple[EnsembleMLP, dict[str, Any]]:
    """Teacher on the labelled maps → pseudo-labels on the pool maps → student on both (same FitConfig)."""
    teacher, t_stats = fit_ensemble(maps, masks, num_classes, cfg, device=device)
    pmasks, p_stats = pseudo_labels(teacher, pool_maps, (int(masks.shape[-2]), int(masks.shape[-1])), cfg.pseudo_threshold)
    both = [torch.cat([m.to(p.dtype), p]) for m, p in zip(maps, pool_maps)]
    # the pixel cap doubles (uniform sampling over labelled + pseudo-labelled pixels): more data, bounded time
    student_cfg = FitConfig(**{**cfg.to_dict(), "max_pixels": 2 * cfg.max_pixels})
    student, stats = fit_ensemble(both, torch.cat([masks, pmasks.to(masks.dtype)]), num_classes, student_cfg, progress,
                                  device=device)
    stats["self_training"] = {**p_stats, "teacher_train_seconds": t_stats["train_seconds"],
                              "threshold": cfg.pseudo_threshold}
    log.info("self-training: %d pool frames, %.1f %% of their pixels pseudo-labelled",
             p_stats["pool_frames"], 100 * p_stats["pseudo_pixel_share"])
    return student, stats


def choose_pool(n_pool: int, n: int, seed: int) -> list[int]:
    """`n` seeded indices into the pool (all of it when n ≥ pool size), sorted."""
    if n >= n_pool:
        return list(range(n_pool))
    return sorted(np.random.default_rng(seed).choice(n_pool, size=n, replace=False).tolist())


def pool_frames(ds: Any, size: int, pool_dir: str | Path | None = None, max_pool: int | None = None) -> torch.Tensor:
    """(P,3,S,S) unlabelled frames for self-training: `pool_dir`'s (else `ds`'s) unlabeled split, minus every
    stem of its test split (a folder without split.json lists all images as unlabelled, test ones included)."""
    from ..data.folder import FolderDataset
    from ..data.transforms import fit_square, to_tensor

    src = FolderDataset(pool_dir) if pool_dir is not None else ds
    test = set(src.stems("test"))
    stems = [s for s in src.stems("unlabeled") if s not in test]
    if not stems:
        raise DataError(f"{getattr(src, 'root', src)}: no unlabelled frames outside the test split for self-training; "
                         "pass --pool DIR (a folder data set with an unlabeled split)")
    stems = stems[:max_pool] if max_pool else stems
    return torch.stack([to_tensor(fit_square(src.image(s), size)) for s in stems])
