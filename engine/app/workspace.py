"""A workspace: which run, data set, classifier and result files the tools look at.

The embedded default is `assets/` (demo_run, demo_data, demo_classifier, demo_sweep.json,
demo_compare.json, demo_methods/ (the fitted compared methods), examples/); $DIFFSEG_WORKSPACE points at another
folder with the same layout.
Any part may also be given as its own directory. Missing parts are None, never an error here.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.classes import IGNORE_INDEX

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def default_root() -> Path:
    """$DIFFSEG_WORKSPACE, else the repository's assets/ folder."""
    env = os.environ.get("DIFFSEG_WORKSPACE")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "assets"


@dataclass
class Workspace:
    """Paths of one workspace (None where absent)."""

    root: Path | None
    run: Path | None
    data: Path | None
    classifier: Path | None
    sweep: Path | None = None
    compare: Path | None = None
    examples: list[Path] = field(default_factory=list)
    out_dir: Path = field(default_factory=lambda: Path.home() / ".diffseg-studio")
    conddiff: Path | None = None  # a fitted conditional-diffusion method directory (method.json)
    metrics: Path | None = None  # the classifier's test metrics (evaluate --json)

    @property
    def jobs_dir(self) -> Path:
        return self.out_dir / "jobs"


def _dir(p: Path | None, marker: str) -> Path | None:
    return p if p is not None and (p / marker).exists() else None


def _file(p: Path | None) -> Path | None:
    return p if p is not None and p.is_file() else None


def resolve(root: str | Path | None = None, run: str | Path | None = None, data: str | Path | None = None,
            classifier: str | Path | None = None, out_dir: str | Path | None = None) -> Workspace:
    """Workspace from a root folder (default layout) with optional per-part overrides."""
    r = Path(root).expanduser().resolve() if root else default_root()
    pick = lambda given, name: Path(given).expanduser().resolve() if given else r / name  # noqa: E731
    run_p, data_p, clf_p = pick(run, "demo_run"), pick(data, "demo_data"), pick(classifier, "demo_classifier")
    examples = sorted(p for p in (r / "examples").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
        if (r / "examples").is_dir() else []
    out = Path(out_dir) if out_dir else Path(os.environ.get("DIFFSEG_OUT", Path.home() / ".diffseg-studio"))
    return Workspace(r, _dir(run_p, "config.json"), _dir(data_p, "classes.json"), _dir(clf_p, "weights.pt"),
                     _file(r / "demo_sweep.json"),
                     _file(r / "demo_compare.json") or _file(out / "results" / "compare.json"), examples, out,
                     _dir(r / "demo_methods" / "conddiff", "method.json"),
                     _file(r / "demo_metrics.json") if classifier is None else None)


def read_json(path: str | Path | None) -> Any:
    """Parsed JSON, or None when the file is missing or unreadable."""
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_loss(run_dir: str | Path) -> list[dict[str, Any]]:
    """RUN/loss.jsonl as a list of dicts (a torn last line is skipped)."""
    path = Path(run_dir) / "loss.jsonl"
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def read_progress(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN/progress.json written by `pretrain` ({"step", "max_steps", "loss", "status"})."""
    return read_json(Path(run_dir) / "progress.json")


def dataset_summary(data_dir: str | Path) -> dict[str, Any]:
    """Frame counts per split and each class's pixel share over the labelled masks."""
    from ..data.folder import open_dataset

    ds = open_dataset(data_dir)
    n = ds.classes.num_classes
    counts = np.zeros(n, dtype=np.int64)
    labelled = sorted(set(ds.stems("train")) | set(ds.stems("test")))
    for stem in labelled:
        if ds.has_mask(stem):
            m = ds.mask(stem)
            counts += np.bincount(m[m != IGNORE_INDEX].ravel(), minlength=n)[:n]
    total = max(int(counts.sum()), 1)
    return {
        "splits": {s: len(ds.stems(s)) for s in ("train", "test", "unlabeled")},
        "classes": [{"id": c.id, "name": c.name, "color": list(c.color), "pixel_share": float(k) / total}
                    for c, k in zip(ds.classes, counts)],
    }
