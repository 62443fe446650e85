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

from ..scoring.analysis import pca_rgb, shared_pca_rgb
from ..segmentation.classifier import SegmentationClassifier, fit_classifier, load_labelled
from ..segmentation.classifier_training import FitConfig
from ..scoring.cv import DEFAULT_FOLDS, cv_score
from ..data.folder import SegDataset
from ..data.transforms import fit_square, fit_square_mask, to_tensor
from ..scoring.evaluation import SWEEP_FIT, evaluate_classifier
from ..segmentation.feature_cache import FeatureCache
from ..segmentation.features import FeatureExtractor, FeatureSpec
from ..scoring.metrics import ConfusionMatrix, summarize
from ..segmentation.preview_head import LinearHead, PreviewConfig
from .preview import LivePreview
from ..models.run import Run
from ..errors import UserError

Progress = Callable[[int, int, str], None]
QUICK_FIT = SWEEP_FIT  # the sweep's settings, so a refit of one cell scores what the heat map shows


class SubsetDataset:
    """A data-set view whose splits are capped (same classes, images and masks)."""

    def __init__(self, ds: SegDataset, max_per_split: dict[str, int]):
        self._ds, self._max = ds, max_per_split
        self.classes, self.root = ds.classes, ds.root

    def stems(self, split: str) -> list[str]:
        stems = self._ds.stems(split)
        cap = self._max.get(split)
        return stems[:cap] if cap else stems

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ds, name)


def model_input(ds: SegDataset, stem: str, size: int) -> torch.Tensor:
    """(3, S, S) tensor in [-1, 1] of a data-set frame, as the classifier sees it."""
    return to_tensor(fit_square(ds.image(stem), size))


def frame_and_truth(ds: SegDataset, stem: str, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 frame and its mask (or None) at the model's square size."""
    img = (np.clip(fit_square(ds.image(stem), size), 0, 1) * 255).round().astype(np.uint8)
    mask = fit_square_mask(ds.mask(stem), size) if ds.has_mask(stem) else None
    return img, mask


def block_pca(run: Run, image: torch.Tensor, step: int, blocks: Sequence[int],
              cache: FeatureCache | None = None, shared: bool = False) -> dict[int, dict[str, Any]]:
    """PCA RGB maps of each block's activations at timestep `step` for one image: native + image size.

    shared=True: one joint basis over the blocks (analysis.shared_pca_rgb), so colours compare across blocks;
    "explained" is then the joint basis's explained-variance ratio.
    """
    maps = FeatureExtractor(run, FeatureSpec((int(step),), tuple(int(b) for b in blocks)), cache)(image)
    hw = tuple(image.shape[-2:])
    out = {}
    if shared:
        joint, _ = shared_pca_rgb([m[None] for m in maps], hw)  # type: ignore[arg-type]
        for b, m, p in zip(blocks, maps, joint):
            out[int(b)] = {"native": p.native[0], "upsampled": p.upsampled[0], "shape": tuple(m.shape),
                           "explained": p.explained_variance_ratio.tolist()}
        return out
    for b, m in zip(blocks, maps):
        p = pca_rgb(m[None], hw)  # type: ignore[arg-type]
        out[int(b)] = {"native": p.native[0], "upsampled": p.upsampled[0], "shape": tuple(m.shape),
                       "explained": p.explained_variance_ratio.tolist()}
    return out


def quick_fit(run: Run, ds: SegDataset, steps: Sequence[int], blocks: Sequence[int],
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
        raise UserError(f"unknown scoring {scoring!r}; choose 'cv' or 'test'")
    clf = fit_classifier(run, ds, spec, fit_cfg, cache=cache, progress=progress)
    images, masks, stems = load_labelled(ds, "train", run.image_size, clf.label_size)
    maps = FeatureExtractor(run, spec, cache).many(images)
    result = cv_score(maps, masks, ds.classes.names, fit_cfg, folds, keep_predictions=True, progress=progress)
    result.update({"_stems": stems, "n_images": len(stems), "uncertainty": dict(zip(stems, result.pop("_scores"))),
                   "scored_on": f"{result['cv']['folds']}-fold cross-validation over {len(stems)} train frames"})
    result["per_frame"] = per_frame_scores(ds, stems, result["_predictions"], result["uncertainty"])
    return clf, result


def evaluate_on(clf: SegmentationClassifier, ds: SegDataset, max_test: int = 12,
                progress: Progress | None = None) -> dict[str, Any]:
    """Test metrics (+ predictions and stems) of a classifier on the first `max_test` test frames."""
    sub = ds if isinstance(ds, SubsetDataset) else SubsetDataset(ds, {"test": max_test})
    result = evaluate_classifier(clf, sub, "test", progress=progress, keep_predictions=True)  # type: ignore[arg-type]
    result["_stems"] = [s for s in sub.stems("test") if ds.has_mask(s)]
    result["per_frame"] = per_frame_scores(ds, result["_stems"], result["_predictions"], result["uncertainty"])
    result["scored_on"] = f"first {len(result['_stems'])} test frames"
    return result


def per_frame_scores(ds: SegDataset, stems: Sequence[str], preds: Sequence[np.ndarray],
                     uncertainty: dict[str, float]) -> list[dict[str, Any]]:
    """One row per scored frame: its own mIoU (same convention as the split's) and uncertainty score."""
    rows = []
    for stem, pred in zip(stems, preds):
        truth = fit_square_mask(ds.mask(stem), pred.shape[0])
        cm = ConfusionMatrix(ds.classes.num_classes).update(pred, truth)
        rows.append({"frame": stem, "mIoU": summarize(cm, ds.classes.names)["miou"],
                     "uncertainty": float(uncertainty.get(stem, float("nan")))})
    return rows


class FeatureBank:
    """Stacked native maps per (split, t, block) for the capped splits, kept in memory between previews.

    Tune's preview refits on another t/block set in well under a second because only new (t, block)
    pairs are read from the feature cache (or computed); nothing else is reloaded.
    """

    def __init__(self, run: Run, ds: SegDataset, cache: FeatureCache | None, max_test: int):
        self.run, self.ds, self.cache, self.max_test = run, ds, cache, max_test
        size = run.image_size
        self.images: dict[str, torch.Tensor] = {}
        self.masks: dict[str, torch.Tensor] = {}
        self.stems: dict[str, list[str]] = {}
        for split, cap in (("train", None), ("test", max_test)):
            stems = [s for s in ds.stems(split) if ds.has_mask(s)][:cap]
            if not stems:
                raise UserError(f"{ds.root}: no labelled frames in split {split!r}")
            self.stems[split] = stems
            self.images[split] = torch.stack([model_input(ds, s, size) for s in stems])
            self.masks[split] = torch.stack([torch.from_numpy(fit_square_mask(ds.mask(s), size).astype(np.int64))
                                             for s in stems])
        self._maps: dict[tuple[str, int, int], torch.Tensor] = {}
        self._previews: dict[PreviewConfig, LivePreview] = {}

    def maps(self, split: str, steps: Sequence[int], blocks: Sequence[int]) -> list[torch.Tensor]:
        """(N, C, h, w) float16 maps of the split, t-major then block; missing pairs are loaded once.

        Missing pairs come from the feature cache when every frame has them; otherwise one UNet forward per
        frame (all missing timesteps in it; one frame at a time, so the cached values are those `fit` would
        compute: FeatureExtractor.many) yields every decoder block, all of which go to the cache, so a later
        change of the block set costs cache reads, never another forward."""
        missing = [(int(t), int(b)) for t in steps for b in blocks if (split, int(t), int(b)) not in self._maps]
        if missing:
            spec = FeatureSpec(tuple(sorted({t for t, _ in missing})), tuple(sorted({b for _, b in missing})))
            stacked = FeatureExtractor(self.run, spec, self.cache).cached_many(self.images[split])
            if stacked is None:
                every = spec if self.cache is None else FeatureSpec(spec.steps, tuple(range(len(self.run.model.output_blocks))))
                computed = dict(zip(every.keys, FeatureExtractor(self.run, every, self.cache).many(self.images[split])))
                stacked = [computed[k] for k in spec.keys]
            for (t, b), m in zip(spec.keys, stacked):
                self._maps[(split, t, b)] = m
        return [self._maps[(split, int(t), int(b))] for t in steps for b in blocks]

    def live_preview(self, cfg: PreviewConfig = PreviewConfig()) -> LivePreview:
        """The bank's preview state (pixel draw, gathered columns, folds), made once per config."""
        if cfg not in self._previews:
            self._previews[cfg] = LivePreview(self, self.ds.classes.num_classes, self.ds.classes.names, cfg)
        return self._previews[cfg]


def preview_fit(bank: FeatureBank, steps: Sequence[int], blocks: Sequence[int], cfg: PreviewConfig = PreviewConfig(),
                scoring: str = "cv") -> tuple[LinearHead, dict[str, Any]]:
    """Tune's live preview of a recipe (engine/preview.py): closed-form LDA on a fixed draw of train pixels,
    scored out-of-fold on the train frames ("cv", default) or, for reporting only, on the bank's test frames."""
    return bank.live_preview(cfg).score(steps, blocks, scoring)


def preview_labels(run: Run, head: LinearHead, image: torch.Tensor, steps: Sequence[int], blocks: Sequence[int],
                   cache: FeatureCache | None = None) -> np.ndarray:
    """uint8 (H, W) labels of one (3,H,W) model-input frame from a preview head fitted on these steps/blocks."""
    maps = FeatureExtractor(run, FeatureSpec(tuple(int(s) for s in steps), tuple(int(b) for b in blocks)), cache)(image)
    return head.logits_maps(maps, tuple(image.shape[-2:])).argmax(0).numpy().astype(np.uint8)
