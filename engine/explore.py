"""Interactive exploration helpers (dashboard Activations / Tune pages, notebooks): small, fast calls.

quick_fit: a small ensemble on chosen timesteps/blocks, scored by k-fold cross-validation on the train
frames (or, for reporting only, on a capped test subset), so a user can try another feature recipe in
seconds (features come from the disk cache after the first time).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .analysis import pca_rgb
from .classifier import SegmentationClassifier, fit_classifier, load_labelled
from .classifier_training import FitConfig
from .cv import DEFAULT_FOLDS, cv_score
from .data.folder import FolderDataset
from .data.transforms import fit_square, fit_square_mask, to_tensor
from .evaluation import evaluate_classifier
from .feature_cache import FeatureCache
from .features import FeatureExtractor, FeatureSpec
from .run import Run

Progress = Callable[[int, int, str], None]
QUICK_FIT = FitConfig(members=2, max_epochs=2, max_pixels=10_000, patience=1)


class SubsetDataset:
    """A FolderDataset view whose splits are capped (same classes, images and masks)."""

    def __init__(self, ds: FolderDataset, max_per_split: dict[str, int]):
        self._ds, self._max = ds, max_per_split
        self.classes, self.root = ds.classes, ds.root

    def stems(self, split: str) -> list[str]:
        stems = self._ds.stems(split)
        cap = self._max.get(split)
        return stems[:cap] if cap else stems

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ds, name)


def model_input(ds: FolderDataset, stem: str, size: int) -> torch.Tensor:
    """(3, S, S) tensor in [-1, 1] of a data-set frame, as the classifier sees it."""
    return to_tensor(fit_square(ds.image(stem), size))


def frame_and_truth(ds: FolderDataset, stem: str, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 frame and its mask (or None) at the model's square size."""
    img = (np.clip(fit_square(ds.image(stem), size), 0, 1) * 255).round().astype(np.uint8)
    mask = fit_square_mask(ds.mask(stem), size) if ds.has_mask(stem) else None
    return img, mask


def block_pca(run: Run, image: torch.Tensor, step: int, blocks: Sequence[int],
              cache: FeatureCache | None = None) -> dict[int, dict[str, Any]]:
    """PCA RGB maps of each block's activations at timestep `step` for one image: native + image size."""
    maps = FeatureExtractor(run, FeatureSpec((int(step),), tuple(int(b) for b in blocks)), cache)(image)
    hw = tuple(image.shape[-2:])
    out = {}
    for b, m in zip(blocks, maps):
        p = pca_rgb(m[None], hw)  # type: ignore[arg-type]
        out[int(b)] = {"native": p.native[0], "upsampled": p.upsampled[0], "shape": tuple(m.shape),
                       "explained": p.explained_variance_ratio.tolist()}
    return out


def quick_fit(run: Run, ds: FolderDataset, steps: Sequence[int], blocks: Sequence[int],
              cache: FeatureCache | None = None, max_test: int = 12, fit_cfg: FitConfig = QUICK_FIT,
              progress: Progress | None = None, scoring: str = "cv",
              folds: int = DEFAULT_FOLDS) -> tuple[SegmentationClassifier, dict[str, Any]]:
    """Fit a small ensemble on the train split and score it.

    scoring "cv" (default): k-fold cross-validation over the train frames (out-of-fold predictions are
    returned with their stems; no test frame is read). "test": the first `max_test` test frames
    (reporting only)."""
    spec = FeatureSpec(tuple(int(s) for s in steps), tuple(int(b) for b in blocks))
    if scoring == "test":
        sub = SubsetDataset(ds, {"test": max_test})
        clf = fit_classifier(run, sub, spec, fit_cfg, cache=cache, progress=progress)  # type: ignore[arg-type]
        return clf, {**evaluate_on(clf, sub, max_test, progress), "scored_on": f"first {max_test} test frames"}
    if scoring != "cv":
        raise ValueError(f"unknown scoring {scoring!r}; choose 'cv' or 'test'")
    clf = fit_classifier(run, ds, spec, fit_cfg, cache=cache, progress=progress)
    images, masks, stems = load_labelled(ds, "train", run.image_size, clf.label_size)
    maps = FeatureExtractor(run, spec, cache).many(images)
    result = cv_score(maps, masks, ds.classes.names, fit_cfg, folds, keep_predictions=True, progress=progress)
    result.update({"_stems": stems, "n_images": len(stems),
                   "scored_on": f"{result['cv']['folds']}-fold cross-validation over {len(stems)} train frames"})
    return clf, result


def evaluate_on(clf: SegmentationClassifier, ds: FolderDataset, max_test: int = 12,
                progress: Progress | None = None) -> dict[str, Any]:
    """Test metrics (+ predictions and stems) of a classifier on the first `max_test` test frames."""
    sub = ds if isinstance(ds, SubsetDataset) else SubsetDataset(ds, {"test": max_test})
    result = evaluate_classifier(clf, sub, "test", progress=progress, keep_predictions=True)  # type: ignore[arg-type]
    result["_stems"] = [s for s in sub.stems("test") if ds.has_mask(s)]
    result["scored_on"] = f"first {len(result['_stems'])} test frames"
    return result
