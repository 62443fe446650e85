"""Refit after labelling: score the current classifier on the test split, fit a new one with the same
features and settings on the (grown) train split, score it, and report mIoU before → after."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_json_atomic
from ..segmentation.classifier import fit_classifier, load_classifier
from ..data.folder import open_dataset
from ..scoring.evaluation import evaluate_classifier
from ..errors import UserError

Progress = Callable[[int, int, str], None]
REPORT = "refit.json"


def _scores(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("miou", "per_class_iou", "pixel_accuracy", "n_images")}


def refit(data: str | Path, classifier: str | Path, out: str | Path, members: int | None = None,
          epochs: int | None = None, cache_dir: str | Path | None = None, use_cache: bool = True,
          progress: Progress | None = None, *, device: str | torch.device) -> dict[str, Any]:
    """Fit a new classifier into `out` on DATA's train split; returns (and writes to OUT/refit.json) the
    test-split metrics of the old and the new classifier."""
    t0 = time.time()
    ds = open_dataset(data)
    if not [s for s in ds.stems("test") if ds.has_mask(s)]:
        raise UserError(f"{ds.root}: no labelled test frames, so a refit cannot be scored")
    old = load_classifier(classifier, device, cache_dir=cache_dir, use_cache=use_cache)
    before = evaluate_classifier(old, ds, "test", progress=progress)
    cfg = old.fit_config
    if members is not None:
        cfg = replace(cfg, members=members)
    if epochs is not None:
        cfg = replace(cfg, max_epochs=epochs)
    new = fit_classifier(old.run, ds, old.spec, cfg, "train", old.label_size, old.cache, progress)
    new.save(out)
    after = evaluate_classifier(new, ds, "test", progress=progress)
    report = {
        "data": str(ds.root), "classifier_before": str(classifier), "classifier_after": str(out),
        "n_train_before": old.stats.get("n_train_images"), "n_train_after": new.stats["n_train_images"],
        "train_stems_added": sorted(set(new.stats["train_stems"]) - set(old.stats.get("train_stems", []))),
        "before": _scores(before), "after": _scores(after), "seconds": round(time.time() - t0, 1),
    }
    write_json_atomic(Path(out) / REPORT, report)
    return report
