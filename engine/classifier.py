"""A fitted segmentation classifier: run reference + feature spec + ensemble + class table, in a directory.

CLF/ layout:  config.json  {"format_version", "run", "run_weights_hash", "spec", "fit", "classes",
                             "channels", "label_size", "stats"}
              weights.pt   the ensemble's state_dict (tensors only; loaded with weights_only=True)
`run` is stored relative to CLF when possible, so a shipped pair (assets/demo_run, assets/demo_classifier)
moves together. A classifier refuses to run on a checkpoint whose content hash differs from the one it
was fitted on (its features would be different).
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import write_bytes_atomic, write_json_atomic
from .classifier_training import FitConfig, fit_ensemble
from .data.classes import ClassTable
from .data.folder import FolderDataset
from .data.transforms import fit_square, fit_square_mask, probs_to_original, resize_shorter, to_tensor
from .feature_cache import FeatureCache
from .features import FeatureExtractor, FeatureSpec, default_cache
from .models.checkpoint import CheckpointError
from .pixel_classifier import EnsembleMLP, Prediction, summarise
from .run import Run, load_run
from .self_training import choose_pool, ensemble_logits, fit_self_trained

FORMAT_VERSION = 1
Progress = Callable[[int, int, str], None]


@dataclass
class SegmentationClassifier:
    """Everything needed to segment a frame: the run, the feature recipe and the ensemble."""

    run: Run
    spec: FeatureSpec
    model: EnsembleMLP
    classes: ClassTable
    fit_config: FitConfig
    label_size: int
    stats: dict[str, Any]
    cache: FeatureCache | None = None

    def extractor(self) -> FeatureExtractor:
        return FeatureExtractor(self.run, self.spec, self.cache)

    # ---- prediction --------------------------------------------------------------------------------
    def predict_tensor(self, image: torch.Tensor, out_hw: tuple[int, int] | None = None) -> Prediction:
        """Prediction for a model-ready (3,H,W) tensor in [-1,1], at out_hw (default: H×W)."""
        ext = self.extractor()
        flip = ext(image.flip(-1)) if self.fit_config.flip_tta else None
        return summarise(ensemble_logits(self.model, ext(image), out_hw or tuple(image.shape[-2:]), flip))

    def predict_image(self, image: np.ndarray) -> tuple[Prediction, np.ndarray]:
        """Segment an HxWx3 float image of ANY size: shorter side → model size, whole frame kept.

        Returns the prediction at model resolution and the label mask mapped back to the input size.
        """
        small, _meta = resize_shorter(image, self.run.image_size, multiple=self.run.model.downsample_factor)
        pred = self.predict_tensor(to_tensor(small))
        probs = probs_to_original(pred.probs, image.shape[:2])
        probs_t = torch.as_tensor(np.asarray(probs))
        labels = probs_t.argmax(dim=0).numpy().astype(np.uint8)
        return pred, labels

    # ---- persistence -------------------------------------------------------------------------------
    def save(self, out: str | Path) -> Path:
        """Write CLF/config.json and CLF/weights.pt atomically."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        run_ref = str(self.run.path.resolve())
        try:
            run_ref = os.path.relpath(self.run.path.resolve(), out.resolve())
        except ValueError:
            pass
        buf = io.BytesIO()
        torch.save(self.model.state_dict(), buf)
        write_bytes_atomic(out / "weights.pt", buf.getvalue())
        write_json_atomic(out / "config.json", {
            "format_version": FORMAT_VERSION, "run": run_ref, "run_weights_hash": self.run.weights_hash,
            "spec": self.spec.to_dict(), "fit": self.fit_config.to_dict(),
            "classes": self.classes.to_dict()["classes"],
            "channels": self.extractor().channels, "hidden": list(self.model.hidden), "label_size": self.label_size,
            "stats": self.stats,
        })
        return out


def load_classifier(path: str | Path, run: Run | None = None, device: str = "cpu",
                    cache_dir: str | Path | None = None, use_cache: bool = True) -> SegmentationClassifier:
    """Load CLF/ (and its run unless given); clear errors for missing files, versions or a changed checkpoint."""
    path = Path(path)
    cfg_path, w_path = path / "config.json", path / "weights.pt"
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such classifier directory")
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise CheckpointError(f"{path}: classifier directory is missing {p.name}")
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: invalid JSON ({e})") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path}: format_version {meta.get('format_version')} is newer than supported "
                              f"({FORMAT_VERSION}); upgrade DiffSeg Studio")
    if run is None:
        run_path = Path(meta["run"])
        if not run_path.is_absolute():
            run_path = (path / run_path).resolve()
        run = load_run(run_path, device)
    if run.weights_hash != meta["run_weights_hash"]:
        raise CheckpointError(f"{path}: fitted on a different checkpoint (hash {meta['run_weights_hash'][:12]}…) "
                              f"than {run.path} ({run.weights_hash[:12]}…); refit the classifier")
    classes = ClassTable.from_dict({"classes": meta["classes"]}, source=str(cfg_path))
    spec = FeatureSpec.from_dict(meta["spec"])
    fit_cfg = FitConfig.from_dict(meta["fit"])
    model = EnsembleMLP(sum(meta["channels"]), classes.num_classes, meta["hidden"], fit_cfg.members, fit_cfg.seed)
    try:
        sd = torch.load(w_path, map_location="cpu", weights_only=True)
        model.load_state_dict(sd)
    except Exception as e:  # noqa: BLE001 - truncated, wrong shapes, not a state dict
        raise CheckpointError(f"{w_path}: cannot load classifier weights: {str(e)[:200]}") from None
    model.eval()
    cache = default_cache(run, cache_dir) if use_cache else None
    clf = SegmentationClassifier(run, spec, model, classes, fit_cfg, int(meta["label_size"]), meta.get("stats", {}), cache)
    if clf.extractor().channels != meta["channels"]:
        raise CheckpointError(f"{path}: feature channels {meta['channels']} do not match the run's blocks")
    return clf


# ---- fitting from a data set ---------------------------------------------------------------------
def load_labelled(ds: FolderDataset, split: str, image_size: int, label_size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images (N,3,S,S) in [-1,1] at the model size and masks (N,L,L) at the label size, for a split."""
    stems = [s for s in ds.stems(split) if ds.has_mask(s)]
    if not stems:
        raise ValueError(f"{getattr(ds, 'root', ds)}: no labelled frames in split {split!r}")
    images, masks = [], []
    for stem in stems:
        img = ds.image(stem)
        images.append(to_tensor(fit_square(img, image_size)))
        masks.append(torch.from_numpy(fit_square_mask(ds.mask(stem), label_size).astype(np.int64)))
    return torch.stack(images), torch.stack(masks), stems


def fit_classifier(run: Run, ds: FolderDataset, spec: FeatureSpec, fit_cfg: FitConfig, split: str = "train",
                   label_size: int | None = None, cache: FeatureCache | None = None,
                   progress: Progress | None = None, pool: torch.Tensor | None = None) -> SegmentationClassifier:
    """Extract (cached) features of the labelled split and fit the ensemble.

    With fit_cfg.self_train > 0, `pool` (unlabelled (P,3,S,S) images in [-1,1], never test frames) supplies
    the frames to pseudo-label (engine/self_training.py)."""
    label_size = label_size or run.image_size
    images, masks, stems = load_labelled(ds, split, run.image_size, label_size)
    extractor = FeatureExtractor(run, spec, cache)

    def feat_progress(done: int, total: int) -> None:
        if progress:
            progress(done, total, f"features {done}/{total}")

    import time

    t0 = time.time()
    maps = extractor.many(images, feat_progress)
    feature_seconds = time.time() - t0
    if fit_cfg.self_train > 0:
        if pool is None or not len(pool):
            raise ValueError("self-training needs unlabelled pool frames (--pool or the data set's unlabeled split)")
        chosen = pool[choose_pool(len(pool), fit_cfg.self_train, fit_cfg.seed)]
        pool_maps = extractor.many(chosen, feat_progress)
        feature_seconds = time.time() - t0
        model, stats = fit_self_trained(maps, masks, pool_maps, ds.classes.num_classes, fit_cfg, progress)
    else:
        model, stats = fit_ensemble(maps, masks, ds.classes.num_classes, fit_cfg, progress)
    stats.update({"feature_seconds": feature_seconds, "train_stems": stems, "n_train_images": len(stems)})
    if cache is not None:
        stats["cache"] = cache.stats()
    return SegmentationClassifier(run, spec, model, ds.classes, fit_cfg, label_size, stats, cache)
