"""`suggest`: rank a data set's unlabelled frames for labelling.

Each frame becomes one vector: the spatial mean of every requested decoder block's activations (the same
features the pixel classifier reads, pooled). Without a classifier the ranking is k-center greedy in that
space, starting from the frames already labelled; with one, the classifier's per-image uncertainty (mean of
the top 10 % pixel JS divergences among ensemble members) is combined with the distance (engine/selection).
Test frames are never candidates. When the run has an unfamiliar-input detector (RUN/familiarity.json,
engine.uncertainty.familiarity), frames it flags as unlike the pretraining pool are excluded: the classifier
would learn from scenes the DDPM never saw, through features it cannot trust.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.folder import SegDataset
from ..data.transforms import fit_square, to_tensor
from ..segmentation.feature_cache import FeatureCache
from ..segmentation.features import FeatureExtractor, FeatureSpec
from ..segmentation.features import default_spec as features_default_spec
from ..models.run import Run
from .selection import k_center_greedy, standardise
from ..errors import UserError

log = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]


def pooled(maps: list[torch.Tensor]) -> np.ndarray:
    """One vector per frame: the spatial mean of each (C, h, w) map, concatenated (t-major, then block)."""
    return torch.cat([m.float().mean(dim=(-2, -1)) for m in maps]).cpu().numpy()


def frame_tensor(ds: SegDataset, stem: str, size: int) -> torch.Tensor:
    """A data-set frame as the model sees it in training: shorter side to `size`, centre crop, [-1, 1]."""
    return to_tensor(fit_square(ds.image(stem), size))


def candidates_and_labelled(ds: SegDataset) -> tuple[list[str], list[str]]:
    """(unlabelled stems outside the test split, labelled train stems)."""
    test = set(ds.stems("test"))
    cands = [s for s in ds.stems("unlabeled") if not ds.has_mask(s) and s not in test]
    labelled = [s for s in ds.stems("train") if ds.has_mask(s)]
    return cands, labelled


def _unfamiliar_flags(run: Run, images: list[torch.Tensor]) -> tuple[np.ndarray | None, str]:
    """(True per frame the run's unfamiliar-input detector flags, "") or (None, why there is no detector).

    The detector is engine.uncertainty.familiarity (RUN/familiarity.json: multiscale denoising errors and a
    density fitted on the pretraining pool); without it every candidate stays in."""
    from ..uncertainty.familiarity import load_for_run

    model, why = load_for_run(run)
    if model is None:
        return None, why
    return np.array([model.assess(run, img).unfamiliar for img in images], dtype=bool), ""


def suggest(run: Run, ds: SegDataset, n: int, spec: FeatureSpec, cache: FeatureCache | None = None,
            classifier: Any = None, progress: Progress | None = None) -> dict[str, Any]:
    """Rank unlabelled frames; returns the JSON-ready report with stems and a reason for each."""
    t0 = time.time()
    cands, labelled = candidates_and_labelled(ds)
    if not cands:
        raise UserError(f"{ds.root}: no unlabelled frames to suggest (every non-test frame has a mask)")
    size = run.image_size
    ext = FeatureExtractor(run, spec, cache)
    stems = labelled + cands
    vecs, scores, tensors = [], [], []
    for i, stem in enumerate(stems):
        img = frame_tensor(ds, stem, size)
        maps = ext(img)
        vecs.append(pooled(maps))
        if i >= len(labelled):
            tensors.append(img)
            if classifier is not None:
                logits = classifier.model.predict_logits(_classifier_maps(classifier, img, maps, spec), (size, size))
                from ..segmentation.pixel_classifier import summarise

                scores.append(summarise(logits).js_score)
        if progress:
            progress(i + 1, len(stems), f"features {i + 1}/{len(stems)}")
    z = standardise(np.stack(vecs))
    lab_z, cand_z = z[: len(labelled)], z[len(labelled):]
    unfamiliar, no_filter = _unfamiliar_flags(run, tensors)
    u = np.asarray(scores) if classifier is not None else None
    picks = k_center_greedy(cand_z, lab_z, n, u, unfamiliar)
    out = []
    for rank, p in enumerate(picks, 1):
        if not np.isfinite(p.distance):
            reason = "first pick with nothing labelled: the most typical frame (closest to the pool's mean)"
        elif u is None:
            reason = f"farthest from every labelled or already-suggested frame (distance {p.distance:.2f})"
        else:
            below = int((u < p.uncertainty).sum())
            reason = (f"uncertain (score {p.uncertainty:.4f}, more than {below} of {len(u)} candidates) and unlike "
                      f"the frames already labelled or chosen (distance {p.distance:.2f})")
        out.append({"rank": rank, "stem": cands[p.index], "reason": reason,
                    "distance": None if not np.isfinite(p.distance) else round(p.distance, 4),
                    "uncertainty": None if p.uncertainty is None else round(p.uncertainty, 6),
                    "score": round(p.score, 6)})
    return {
        "strategy": "uncertainty+diversity" if classifier is not None else "diversity (k-center greedy)",
        "data": str(ds.root), "run": str(run.path), "spec": spec.to_dict(),
        "n_candidates": len(cands), "n_labelled": len(labelled),
        "n_unfamiliar_excluded": int(unfamiliar.sum()) if unfamiliar is not None else None,
        "unfamiliar_filter": unfamiliar is not None, "unfamiliar_filter_note": no_filter or None,
        "unfamiliar_excluded": [c for c, f in zip(cands, unfamiliar) if f] if unfamiliar is not None else [],
        "suggestions": out, "seconds": round(time.time() - t0, 2),
    }


def _classifier_maps(classifier: Any, img: torch.Tensor, maps: list[torch.Tensor], spec: FeatureSpec) -> list[torch.Tensor]:
    """The classifier's own feature maps: reused when its spec is the ranking spec, else extracted."""
    if classifier.spec == spec:
        return maps
    return classifier.extractor()(img)


RANKING_STEPS = (50,)


def ranking_spec(run: Run, classifier: Any = None) -> FeatureSpec:
    """The classifier's features when there is one, else t = 50 at the model's default blocks
    (engine.segmentation.features.default_spec owns those)."""
    if classifier is not None:
        spec: FeatureSpec = classifier.spec
        return spec
    return replace(features_default_spec(run), steps=RANKING_STEPS)


def write_report(report: dict[str, Any], path: str | Path) -> None:
    """Write the report atomically as JSON."""
    from ..atomic import write_json_atomic

    write_json_atomic(path, report)
