"""`data import-video`: frames of a clip → the folder data-set format, every frame unlabelled.

Sampling: every N-th decoded frame (`every`) or a target rate (`fps`, by timestamps, so variable-rate
clips sample evenly in time). Near duplicates are skipped: each candidate is reduced to a 32×32 grey
thumbnail and dropped when its mean absolute difference to the last KEPT frame is below `dedup`
(fraction of the 0..1 range; 0 keeps everything) — a still microscope between two instrument moves
yields one frame, not hundreds. The folder is built under a temporary name and renamed at the end, so
an unreadable or truncated clip leaves nothing half-written.

This module keeps its own small writer and near-duplicate filter; when the labelling work's shared
`engine.data.importing` lands, both imports should use that one implementation.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.classes import ClassTable
from ..data.folder import write_folder_dataset
from .reader import iter_frames, probe, to_rgb

log = logging.getLogger(__name__)


def thumbnail(rgb: np.ndarray, side: int = 32) -> np.ndarray:
    """Grey side×side float thumbnail in [0, 1] (area-averaged), the near-duplicate signature."""
    return np.asarray(Image.fromarray(rgb).convert("L").resize((side, side), Image.BOX), np.float32) / 255.0


class NearDuplicateFilter:
    """Keeps a frame unless it is within `threshold` mean absolute difference of the last kept one."""

    def __init__(self, threshold: float = 0.01):
        if threshold < 0:
            raise ValueError(f"near-duplicate threshold must be >= 0, got {threshold}")
        self.threshold, self.last = threshold, None

    def keep(self, rgb: np.ndarray) -> bool:
        if self.threshold == 0:
            return True
        th = thumbnail(rgb)
        if self.last is not None and float(np.abs(th - self.last).mean()) < self.threshold:
            return False
        self.last = th
        return True


def import_video(video: str | Path, out: str | Path, classes: ClassTable, every: int | None = None,
                 fps: float | None = None, dedup: float = 0.01,
                 progress: Callable[[int, int, int], None] | None = None) -> dict[str, object]:
    """Write OUT/images/<clip>_<frame>.png, classes.json, split.json (all unlabelled); returns counts."""
    video, out = Path(video), Path(out)
    if (every is None) == (fps is None):
        raise ValueError("give exactly one of --every N or --fps F")
    if every is not None and every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    if fps is not None and fps <= 0:
        raise ValueError(f"--fps must be > 0, got {fps}")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not empty; choose a new output directory")
    info = probe(video)
    filt = NearDuplicateFilter(dedup)
    stem0 = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in video.stem) or "frame"
    counts = {"decoded": 0, "sampled": 0, "kept": 0, "skipped_duplicates": 0}
    expected = info.frames or int(info.duration * info.fps)
    kept: list[str] = []

    def items():
        next_t = 0.0
        for i, t, frame in iter_frames(video, info):
            counts["decoded"] += 1
            if every is not None:
                take = i % every == 0
            else:
                take = t + 1e-6 >= next_t
                if take:  # next sample: the first slot of the 1/fps grid after this frame
                    next_t = (np.floor(t * fps + 1e-6) + 1) / fps
            if not take:
                continue
            counts["sampled"] += 1
            rgb = to_rgb(frame, info.rotation)
            if not filt.keep(rgb):
                counts["skipped_duplicates"] += 1
                continue
            stem = f"{stem0}_{i:06d}"
            kept.append(stem)
            counts["kept"] += 1
            if progress:
                progress(counts["decoded"], expected, counts["kept"])
            yield stem, rgb, None

    tmp = out.with_name(f".{out.name}.importing")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_folder_dataset(tmp, classes, items(), split=None)
        write_folder_dataset(tmp, classes, [], split={"train": [], "test": [], "unlabeled": kept})
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("import-video: %s", counts)
    return {"out": str(out), **counts, "video": info.to_dict()}
