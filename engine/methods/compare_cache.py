"""Precomputed test-frame predictions of a comparison's fitted methods, so the Compare page opens fast.

One `.npz` per compare report (`<report stem>_predictions.npz` beside it; the shipped demo carries one for
its first test frames). Each entry is keyed by method, a fingerprint of the method's fitted files and the
frame stem, so a refitted method or a changed file never serves stale masks: it is predicted again.
Arrays only (np.load with allow_pickle=False); written atomically.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_bytes_atomic

log = logging.getLogger(__name__)
Predictor = Callable[[str, str], dict[str, Any]]  # (method, stem) -> {"labels", "variance", "score"}


def store_path(report_path: str | Path) -> Path:
    """Where a report's prediction store lives: beside it, `<stem>_predictions.npz`."""
    p = Path(report_path)
    return p.with_name(f"{p.stem}_predictions.npz")


def fingerprint(method_dir: str | Path) -> str:
    """Content hash of a fitted method's files (weights, configs; images skipped) and of the per-frame score's
    definition, so stored scores of an older score (the ensemble's JS before today's review score) are
    predicted again."""
    from ..uncertainty.frame_scores import REVIEW_SCORE

    root = Path(method_dir)
    h = hashlib.sha1(REVIEW_SCORE.encode())
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() not in (".png", ".jpg")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _key(method: str, fp: str, stem: str, what: str) -> str:
    return f"{method}|{fp}|{stem}|{what}"


class PredictionStore:
    """Read-mostly store of (method, fingerprint, stem) → labels / variance / score."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._arrays: dict[str, np.ndarray] = {}
        if self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    self._arrays = {k: z[k] for k in z.files}
            except (OSError, ValueError) as e:  # a damaged store is only a slower page, never an error
                log.warning("%s: unreadable prediction store (%s); predicting again", self.path, e)
        self.dirty = False

    def get(self, method: str, fp: str, stem: str) -> dict[str, Any] | None:
        labels = self._arrays.get(_key(method, fp, stem, "labels"))
        if labels is None:
            return None
        var = self._arrays.get(_key(method, fp, stem, "variance"))
        score = self._arrays.get(_key(method, fp, stem, "score"))
        return {"labels": labels, "variance": None if var is None else var.astype(np.float32),
                "score": None if score is None else float(score)}

    def put(self, method: str, fp: str, stem: str, pred: dict[str, Any]) -> None:
        self._arrays[_key(method, fp, stem, "labels")] = np.asarray(pred["labels"], dtype=np.uint8)
        if pred.get("variance") is not None:
            self._arrays[_key(method, fp, stem, "variance")] = np.asarray(pred["variance"], dtype=np.float16)
        if pred.get("score") is not None:
            self._arrays[_key(method, fp, stem, "score")] = np.asarray(pred["score"], dtype=np.float64)
        self.dirty = True

    def stems(self, method: str, fp: str) -> set[str]:
        """Frames stored for one method version."""
        prefix = f"{method}|{fp}|"
        return {k.split("|")[2] for k in self._arrays if k.startswith(prefix) and k.endswith("|labels")}

    def keep_only(self, fingerprints: dict[str, str]) -> int:
        """Drop entries of other methods or method versions (stale after a refit); returns how many arrays went."""
        stale = [k for k in self._arrays if fingerprints.get(k.split("|")[0]) != k.split("|")[1]]
        for k in stale:
            del self._arrays[k]
        self.dirty = self.dirty or bool(stale)
        return len(stale)

    def save(self) -> Path:
        buf = io.BytesIO()
        np.savez_compressed(buf, **self._arrays)  # type: ignore[arg-type]  # numpy's stubs type **kwds as bool
        write_bytes_atomic(self.path, buf.getvalue())
        self.dirty = False
        return self.path


def precompute(store: PredictionStore, fingerprints: dict[str, str], stems: Iterable[str],
               predict: Predictor) -> int:
    """Fill the store for every (method, stem) it lacks; returns how many predictions were made."""
    made = 0
    for method, fp in fingerprints.items():
        have = store.stems(method, fp)
        for stem in stems:
            if stem not in have:
                store.put(method, fp, stem, predict(method, stem))
                made += 1
    return made


def manifest(store: PredictionStore) -> dict[str, Any]:
    """method → {fingerprint: n frames}: what a store holds (for logs and the CLI)."""
    out: dict[str, dict[str, int]] = {}
    for k in store._arrays:
        method, fp, _stem, what = k.split("|")
        if what == "labels":
            out.setdefault(method, {}).setdefault(fp, 0)
            out[method][fp] += 1
    return json.loads(json.dumps(out))
