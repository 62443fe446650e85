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

from .atomic import atomic_directory, json_text
from .classifier_training import FitConfig, fit_ensemble
from .data.classes import ClassTable
from .data.folder import FolderDataset
from .data.transforms import fit_square, fit_square_mask, probs_to_original, resize_shorter, to_tensor
from .feature_cache import FeatureCache
from .features import FeatureExtractor, FeatureSpec, default_cache
from .models.checkpoint import CheckpointError, check_finite
from .memory import check_memory
from .pixel_classifier import EnsembleMLP, Prediction, hidden_sizes, summarise
from .run import Run, load_run
from .self_training import choose_pool, ensemble_logits, fit_self_trained

FORMAT_VERSION = 1
CLASSIFIER_FILES = ("config.json", "weights.pt")  # everything a classifier directory holds
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
    temperature: float = 1.0  # fitted by `calibrate` on held-out labelled pixels; 1.0 = uncalibrated
    calibration: dict[str, Any] | None = None  # how the temperature was fitted (ECE / NLL before and after)
    review: dict[str, Any] | None = None  # ReviewCalibration.to_dict(): scores of typical frames

    def extractor(self) -> FeatureExtractor:
        return FeatureExtractor(self.run, self.spec, self.cache)

    # ---- prediction --------------------------------------------------------------------------------
    def predict_tensor(self, image: torch.Tensor, out_hw: tuple[int, int] | None = None) -> Prediction:
        """Prediction for a model-ready (3,H,W) tensor in [-1,1], at out_hw (default: H×W)."""
        ext = self.extractor()
        flip = ext(image.flip(-1)) if self.fit_config.flip_tta else None
        logits = ensemble_logits(self.model, ext(image), out_hw or tuple(image.shape[-2:]), flip)
        return summarise(logits, temperature=self.temperature)

    def predict_image(self, image: np.ndarray) -> tuple[Prediction, np.ndarray]:
        """Segment an HxWx3 float image of ANY size: shorter side → model size, whole frame kept.

        Returns the prediction at model resolution and the label mask mapped back to the input size.
        """
        small, _meta = resize_shorter(image, self.run.image_size, multiple=self.run.model.downsample_factor)
        pred = self.predict_tensor(to_tensor(small))
        # the mask comes from the uncalibrated mean (a temperature never changes the argmax at model size)
        probs = probs_to_original(pred.raw_probs if pred.raw_probs is not None else pred.probs, image.shape[:2])
        probs_t = torch.as_tensor(np.asarray(probs))
        labels = probs_t.argmax(dim=0).numpy().astype(np.uint8)
        return pred, labels

    # ---- persistence -------------------------------------------------------------------------------
    def save(self, out: str | Path) -> Path:
        """Write CLF/ as a whole: config.json and weights.pt are built in a temp folder and swapped in together,
        so a crash or a concurrent writer never leaves weights of one fit beside the config of another."""
        out = Path(out)
        run_ref = str(self.run.path.resolve())
        try:
            run_ref = os.path.relpath(self.run.path.resolve(), out.resolve())
        except ValueError:
            pass
        buf = io.BytesIO()
        torch.save(self.model.state_dict(), buf)
        config = json_text({
            "format_version": FORMAT_VERSION, "run": run_ref, "run_weights_hash": self.run.weights_hash,
            "spec": self.spec.to_dict(), "fit": self.fit_config.to_dict(),
            "classes": self.classes.to_dict()["classes"],
            "channels": self.extractor().channels, "hidden": list(self.model.hidden), "label_size": self.label_size,
            "stats": self.stats, **self.calibration_fields(),
        }, indent=2, what=str(out / "config.json"))
        with atomic_directory(out, CLASSIFIER_FILES, "classifier --out") as tmp:
            (tmp / "weights.pt").write_bytes(buf.getvalue())
            (tmp / "config.json").write_text(config + "\n", encoding="utf-8")
        return out

    def calibration_fields(self) -> dict[str, Any]:
        """The config.json keys `calibrate` adds (absent for an uncalibrated classifier)."""
        out: dict[str, Any] = {}
        if self.calibration is not None or self.temperature != 1.0:
            out["calibration"] = {**(self.calibration or {}), "temperature": self.temperature}
        if self.review is not None:
            out["review_calibration"] = self.review
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
        if isinstance(sd, dict):
            check_finite(sd, str(w_path))
        model.load_state_dict(sd)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated, wrong shapes, not a state dict
        raise CheckpointError(f"{w_path}: cannot load classifier weights: {str(e)[:200]}") from None
    model.eval()
    cache = default_cache(run, cache_dir) if use_cache else None
    calib = meta.get("calibration")
    temperature = float(calib.get("temperature", 1.0)) if isinstance(calib, dict) else 1.0
    if not temperature > 0:
        raise CheckpointError(f"{cfg_path}: calibration temperature must be positive, got {temperature}")
    clf = SegmentationClassifier(run, spec, model, classes, fit_cfg, int(meta["label_size"]), meta.get("stats", {}), cache,
                                 temperature, calib if isinstance(calib, dict) else None, meta.get("review_calibration"))
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


def fit_memory_estimate(extractor: FeatureExtractor, n_frames: int, label_size: int, num_classes: int,
                        fit_cfg: FitConfig) -> int:
    """Rough peak bytes of a fit: fp16 native maps of every frame, masks and pixel indices at the label size,
    the ensemble with its gradients, Adam state and best-epoch copy, and one batch of gathered features."""
    size = extractor.run.image_size
    maps = n_frames * sum(c * h * w for c, h, w in extractor.map_shapes(size, size)) * 2
    labels = n_frames * label_size * label_size * (8 + 24)  # int64 masks + (image, row, col) indices
    dims = [sum(extractor.channels), *hidden_sizes(fit_cfg.arch, num_classes), num_classes]
    params = fit_cfg.members * sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))
    batch = fit_cfg.batch_size * (dims[0] + 3 * fit_cfg.members * dims[1]) * 4 * 2
    return maps + labels + params * 4 * 5 + batch


def fit_classifier(run: Run, ds: FolderDataset, spec: FeatureSpec, fit_cfg: FitConfig, split: str = "train",
                   label_size: int | None = None, cache: FeatureCache | None = None,
                   progress: Progress | None = None, pool: torch.Tensor | None = None) -> SegmentationClassifier:
    """Extract (cached) features of the labelled split and fit the ensemble.

    With fit_cfg.self_train > 0, `pool` (unlabelled (P,3,S,S) images in [-1,1], never test frames) supplies
    the frames to pseudo-label (engine/self_training.py)."""
    label_size = label_size or run.image_size
    extractor = FeatureExtractor(run, spec, cache)
    n_frames = sum(1 for s in ds.stems(split) if ds.has_mask(s))
    check_memory(fit_memory_estimate(extractor, n_frames, label_size, ds.classes.num_classes, fit_cfg),
                 f"fit ({n_frames} frames, --label-size {label_size}, --members {fit_cfg.members})",
                 "lower --label-size, --members or --batch-size, or use fewer timesteps/blocks")
    images, masks, stems = load_labelled(ds, split, run.image_size, label_size)

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
