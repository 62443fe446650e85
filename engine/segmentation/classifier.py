"""A fitted segmentation classifier: run reference + feature spec + ensemble + class table, in a directory.

CLF/ layout:  config.json  {"format_version", "run", "run_weights_hash", "spec", "fit", "classes",
                             "channels", "label_size", "stats"}
              weights.pt   the ensemble's state_dict (tensors only; loaded with weights_only=True)
`run` is stored relative to CLF when possible, so a shipped pair (assets/demo_run, assets/demo_classifier)
moves together. A classifier refuses to run on a checkpoint whose identity differs from the one it was
fitted on (its features would be different). `run_identity_scheme` says how `run_weights_hash` was made
(engine/models/run.py): 2 = weights + activation config; absent = 1, weights only (classifiers saved before it).
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..artefacts import CLASSIFIER, check_output_dir
from ..atomic import atomic_directory, json_text
from .augmentation import AugmentedMaps
from .classifier_training import FitConfig, fit_ensemble
from ..data.classes import ClassTable
from ..data.folder import SegDataset, load_labelled
from ..errors import DataError, UserError
from .feature_cache import FeatureCache
from .features import FeatureExtractor, FeatureSpec, default_cache
from ..memory import check_memory
from ..models.checkpoint import CheckpointError, check_finite
from .pixel_classifier import EnsembleMLP, Prediction, hidden_sizes, summarise, summarise_batch
from ..models.run import IDENTITY_SCHEME, Run, load_run
from ..validation import check_format_version, read_json, show
from .self_training import choose_pool, ensemble_logits, fit_self_trained

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
CLASSIFIER_FILES = ("config.json", "weights.pt", "recipe_search.json")  # everything a classifier directory holds
RECIPE_SEARCH_FILE = "recipe_search.json"  # written only by `fit --recipe auto`: how the recipe was chosen
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
    path: Path | None = None  # where it was loaded from or saved to
    recipe_search: dict[str, Any] | None = None  # `fit --recipe auto`'s full search (trace included), if any

    def ensemble_digest(self) -> str:
        """sha256 (16 hex) of the ensemble's weights: tells two fits with the same recipe apart."""
        h = hashlib.sha256()
        for name, tensor in self.model.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def extractor(self) -> FeatureExtractor:
        return FeatureExtractor(self.run, self.spec, self.cache)

    # ---- prediction --------------------------------------------------------------------------------
    def predict_tensor(self, image: torch.Tensor, out_hw: tuple[int, int] | None = None) -> Prediction:
        """Prediction for a model-ready (3,H,W) tensor in [-1,1], at out_hw (default: H×W); computed on the
        run's device, returned on the CPU. With the fit's `flip_tta`, the mirrored frame's logits are averaged in."""
        ext = self.extractor()
        flip = ext(image.flip(-1)) if self.fit_config.flip_tta else None
        logits = ensemble_logits(self.model, ext(image), out_hw or (int(image.shape[-2]), int(image.shape[-1])), flip)
        return summarise(logits, temperature=self.temperature).cpu()

    def summarise_batch(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, E, C, H, W) member logits of a batch (video) → calibrated mean softmax, JS maps, scores: the
        batched twin of `predict_tensor`'s summary, at this classifier's temperature."""
        return summarise_batch(logits, temperature=self.temperature)

    # ---- persistence -------------------------------------------------------------------------------
    def save(self, out: str | Path) -> Path:
        """Write CLF/ as a whole: config.json and weights.pt are built in a temp folder and swapped in together,
        so a crash or a concurrent writer never leaves weights of one fit beside the config of another."""
        out = check_output_dir(out, CLASSIFIER)  # never a run, data set or method folder
        run_ref = str(self.run.path.resolve())
        try:
            run_ref = os.path.relpath(self.run.path.resolve(), out.resolve())
        except ValueError:
            pass
        buf = io.BytesIO()
        torch.save(self.model.state_dict(), buf)
        config = json_text({
            "format_version": FORMAT_VERSION, "run": run_ref, "run_weights_hash": self.run.weights_hash,
            "run_identity_scheme": IDENTITY_SCHEME, "run_activation_config": self.run.activation_config(),
            "spec": self.spec.to_dict(), "fit": self.fit_config.to_dict(),
            "classes": self.classes.to_dict()["classes"],
            "channels": self.extractor().channels, "hidden": list(self.model.hidden), "label_size": self.label_size,
            "stats": self.stats, **self.calibration_fields(),
        }, indent=2, what=str(out / "config.json"))
        search = None if self.recipe_search is None else json_text(
            self.recipe_search, indent=2, what=str(out / RECIPE_SEARCH_FILE))
        with atomic_directory(out, CLASSIFIER_FILES, "classifier --out") as tmp:
            (tmp / "weights.pt").write_bytes(buf.getvalue())
            (tmp / "config.json").write_text(config + "\n", encoding="utf-8")
            if search is not None:
                (tmp / RECIPE_SEARCH_FILE).write_text(search + "\n", encoding="utf-8")
        self.path = out
        return out

    def calibration_fields(self) -> dict[str, Any]:
        """The config.json keys `calibrate` adds (absent for an uncalibrated classifier)."""
        out: dict[str, Any] = {}
        if self.calibration is not None or self.temperature != 1.0:
            out["calibration"] = {**(self.calibration or {}), "temperature": self.temperature}
        if self.review is not None:
            out["review_calibration"] = self.review
        return out


def current_review(review: Any, cfg_path: Path) -> dict[str, Any] | None:
    """The saved review calibration if it was computed for today's review score, else None (the review flag
    then says it is not calibrated): thresholds of the old JS score mean nothing on the new score's scale."""
    from ..uncertainty.frame_scores import REVIEW_SCORE

    if not isinstance(review, dict):
        return None
    if (review.get("meta") or {}).get("score") != REVIEW_SCORE:
        log.warning("%s: review calibration computed for another per-frame score (%s); ignored — rerun "
                    "`python -m engine calibrate --classifier ...`", cfg_path, (review.get("meta") or {}).get("score"))
        return None
    return review


#: Keys of CLF/config.json: required ones, and optional ones (written by newer versions, or stats).
REQUIRED_KEYS = ("format_version", "run", "run_weights_hash", "spec", "fit", "classes", "channels", "hidden",
                 "label_size")
OPTIONAL_KEYS = ("stats", "run_identity_scheme", "run_activation_config", "calibration", "review_calibration")
MAX_LABEL_SIZE = 2048  # as `fit --label-size`


def read_classifier_config(cfg_path: Path) -> dict[str, Any]:
    """CLF/config.json, checked strictly: types, ranges, missing and unknown keys (one line naming the file)."""
    meta = read_json(cfg_path, CheckpointError)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object, got {show(meta)}")
    check_format_version(meta, FORMAT_VERSION, cfg_path, CheckpointError, "supported")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{cfg_path}: missing key {missing[0]!r}")
    unknown = sorted(set(meta) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:  # top-level keys are metadata other versions may add; the sections below are strict
        log.warning("%s: ignoring unknown key(s) %s", cfg_path, unknown)

    def bad(key: str, want: str) -> CheckpointError:
        return CheckpointError(f"{cfg_path}: {key}: expected {want}, got {show(meta[key])}")

    if not isinstance(meta["run"], str) or not meta["run"].strip():
        raise bad("run", "the run directory as a non-empty string")
    h = meta["run_weights_hash"]
    if not isinstance(h, str) or len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise bad("run_weights_hash", "64 lowercase hex digits")
    scheme = meta.get("run_identity_scheme", 1)
    if isinstance(scheme, bool) or scheme not in (1, 2):
        raise CheckpointError(f"{cfg_path}: run_identity_scheme: expected 1 or 2, got {show(scheme)}")
    for key in ("channels", "hidden"):
        v = meta[key]
        if not isinstance(v, list) or not v or len(v) > 4096 or not all(
                isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 65536 for c in v):
            raise bad(key, "a non-empty list of whole numbers 1..65536")
    if len(meta["hidden"]) > 8:
        raise bad("hidden", "at most 8 hidden layer sizes")
    ls = meta["label_size"]
    if isinstance(ls, bool) or not isinstance(ls, int) or not 1 <= ls <= MAX_LABEL_SIZE:
        raise bad("label_size", f"a whole number 1..{MAX_LABEL_SIZE}")
    if "stats" in meta and not isinstance(meta["stats"], dict):
        raise bad("stats", "an object")
    if not isinstance(meta["classes"], list):
        raise bad("classes", "a list of classes")
    return meta


def check_run_identity(path: Path, meta: dict[str, Any], run: Run) -> None:
    """Refuse a run whose identity (under the scheme the classifier recorded) differs from the fitted one,
    naming the changed config fields when the classifier recorded them."""
    scheme = int(meta.get("run_identity_scheme", 1))
    if run.identity(scheme) == meta["run_weights_hash"]:
        return
    recorded = meta.get("run_activation_config")
    detail = ""
    if isinstance(recorded, dict):
        now = run.activation_config()
        changed = [f"{sec}.{k} {recorded.get(sec, {}).get(k)!r} → {v!r}" for sec, d in now.items()
                   for k, v in d.items() if isinstance(recorded.get(sec), dict) and recorded[sec].get(k) != v]
        detail = f"; changed config: {', '.join(changed)}" if changed else "; the weights differ"
    raise CheckpointError(f"{path}: fitted on a different checkpoint (hash {meta['run_weights_hash'][:12]}…) "
                          f"than {run.path} ({run.identity(scheme)[:12]}…){detail}; refit the classifier")


def check_same_classes(clf_classes: ClassTable, ds_classes: ClassTable, clf_path: str, data_path: str) -> None:
    """Refuse a data set whose class table (ids and names) differs from the classifier's, naming differences."""
    a, b = {c.id: c.name for c in clf_classes}, {c.id: c.name for c in ds_classes}
    diffs = []
    for cid in sorted(set(a) | set(b)):
        if a.get(cid) != b.get(cid):
            diffs.append(f"id {cid}: classifier {a[cid]!r} vs data set {b[cid]!r}" if cid in a and cid in b else
                         f"id {cid} ({a.get(cid) or b.get(cid)!r}) only in the {'classifier' if cid in a else 'data set'}")
    if diffs:
        raise DataError(f"{data_path}: its classes differ from those of classifier {clf_path}: {'; '.join(diffs[:6])}"
                        f"{' ...' if len(diffs) > 6 else ''}; evaluate on a data set with the same class table")


def load_classifier(path: str | Path, device: str | torch.device, run: Run | None = None,
                    cache_dir: str | Path | None = None, use_cache: bool = True) -> SegmentationClassifier:
    """Load CLF/ (and its run unless given) with the run and the ensemble on `device` (a given run must be
    there already). Clear errors for missing files, versions or a changed checkpoint."""
    path = Path(path)
    cfg_path, w_path = path / "config.json", path / "weights.pt"
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such classifier directory")
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise CheckpointError(f"{path}: classifier directory is missing {p.name}")
    meta = read_classifier_config(cfg_path)
    if run is None:
        run_path = Path(meta["run"])
        if not run_path.is_absolute():
            run_path = (path / run_path).resolve()
        run = load_run(run_path, device)
    elif _same_device(run.device, device) is False:
        raise UserError(f"{path}: device {device} asked for, but the given run is on {run.device}")
    check_run_identity(path, meta, run)
    classes = ClassTable.from_dict({"classes": meta["classes"]}, source=str(cfg_path))
    spec = FeatureSpec.from_dict(meta["spec"], str(cfg_path))
    fit_cfg = FitConfig.from_dict(meta["fit"], str(cfg_path))
    try:
        sd = torch.load(w_path, map_location="cpu", weights_only=True)  # staged on the CPU, then moved
        if isinstance(sd, dict):
            check_finite(sd, str(w_path))
        held = sum(v.numel() for v in sd.values())
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated, not a state dict
        raise CheckpointError(f"{w_path}: cannot load classifier weights: {str(e)[:200]}") from None
    first_layer = fit_cfg.members * sum(meta["channels"]) * meta["hidden"][0]
    if first_layer > held:  # before allocating: a config edited to describe a larger net than the weights hold
        raise CheckpointError(f"{cfg_path}: channels/hidden/members describe a network of at least {first_layer} "
                              f"weights but {w_path.name} holds {held}")
    try:
        model = EnsembleMLP(sum(meta["channels"]), classes.num_classes, meta["hidden"], fit_cfg.members, fit_cfg.seed)
        model.load_state_dict(sd)
    except Exception as e:  # noqa: BLE001 - wrong shapes
        raise CheckpointError(f"{w_path}: cannot load classifier weights: {' '.join(str(e).split())[:200]}") from None
    model.to(run.device).eval()
    cache = default_cache(run, cache_dir) if use_cache else None
    calib = meta.get("calibration")
    temperature = float(calib.get("temperature", 1.0)) if isinstance(calib, dict) else 1.0
    if not temperature > 0:
        raise CheckpointError(f"{cfg_path}: calibration temperature must be positive, got {temperature}")
    clf = SegmentationClassifier(run, spec, model, classes, fit_cfg, int(meta["label_size"]), meta.get("stats", {}), cache,
                                 temperature, calib if isinstance(calib, dict) else None,
                                 current_review(meta.get("review_calibration"), cfg_path), path)
    if (path / RECIPE_SEARCH_FILE).is_file():  # kept through later saves (e.g. `calibrate` rewrites the folder)
        clf.recipe_search = read_json(path / RECIPE_SEARCH_FILE, CheckpointError)
    if clf.extractor().channels != meta["channels"]:
        raise CheckpointError(f"{path}: feature channels {meta['channels']} do not match the run's blocks")
    return clf


def _same_device(a: torch.device, b: str | torch.device) -> bool:
    b = torch.device(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


# ---- fitting from a data set ---------------------------------------------------------------------
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


def fit_classifier(run: Run, ds: SegDataset, spec: FeatureSpec, fit_cfg: FitConfig, split: str = "train",
                   label_size: int | None = None, cache: FeatureCache | None = None,
                   progress: Progress | None = None, pool: torch.Tensor | None = None) -> SegmentationClassifier:
    """Extract (cached) features of the labelled split and fit the ensemble.

    With fit_cfg.self_train > 0, `pool` (unlabelled (P,3,S,S) images in [-1,1], never test frames) supplies
    the frames to pseudo-label (engine/segmentation/self_training.py); with fit_cfg.augment > 0 the ensemble also
    fits augmented copies of every labelled frame (engine/segmentation/augmentation.py)."""
    label_size = label_size or run.image_size
    spec = spec.for_model(len(run.model.output_blocks))
    extractor = FeatureExtractor(run, spec, cache)
    n_frames = sum(1 for s in ds.stems(split) if ds.has_mask(s))
    check_memory(fit_memory_estimate(extractor, n_frames * (1 + fit_cfg.augment), label_size, ds.classes.num_classes, fit_cfg),
                 f"fit ({n_frames} frames, --label-size {label_size}, --members {fit_cfg.members})",
                 "lower --label-size, --members or --batch-size, or use fewer timesteps/blocks")
    images, masks, stems = load_labelled(ds, split, run.image_size, label_size)

    def feat_progress(done: int, total: int) -> None:
        if progress:
            progress(done, total, f"features {done}/{total}")

    import time

    t0 = time.time()
    maps = extractor.many(images, feat_progress)
    if fit_cfg.augment > 0:
        augmented = AugmentedMaps.extract(images, masks, fit_cfg.augment, fit_cfg.seed,
                                          lambda x: extractor.many(x, feat_progress))
        maps, masks = augmented.with_frames(maps, masks)
    feature_seconds = time.time() - t0
    if fit_cfg.self_train > 0:
        if pool is None or not len(pool):
            raise DataError("self-training needs unlabelled pool frames (--pool or the data set's unlabeled split)")
        chosen = pool[choose_pool(len(pool), fit_cfg.self_train, fit_cfg.seed)]
        pool_maps = extractor.many(chosen, feat_progress)
        feature_seconds = time.time() - t0
        model, stats = fit_self_trained(maps, masks, pool_maps, ds.classes.num_classes, fit_cfg, progress,
                                        device=run.device)
    else:
        model, stats = fit_ensemble(maps, masks, ds.classes.num_classes, fit_cfg, progress, device=run.device)
    stats.update({"feature_seconds": feature_seconds, "train_stems": stems, "n_train_images": len(stems),
                  "augmented_frames": len(stems) * fit_cfg.augment})
    if cache is not None:
        stats["cache"] = cache.stats()
    return SegmentationClassifier(run, spec, model, ds.classes, fit_cfg, label_size, stats, cache)
