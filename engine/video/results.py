"""Reading a segment-video output folder back (the Video page's engine side), and upload checks.

Nothing here computes a segmentation: it reads what `segment-video` wrote (summary, table, masks,
uncertainty maps) and decodes single frames of the input for display.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .reader import VideoError, VideoInfo, iter_frames, probe, to_rgb

MAX_UPLOAD_MB = 50  # .streamlit/config.toml server.maxUploadSize
MAX_SECONDS = 600.0  # the page refuses longer clips (use the CLI)
VIDEO_TYPES = ["mp4", "mov", "m4v", "mkv", "avi", "webm"]


def check_upload(path: str | Path, size_bytes: int) -> VideoInfo:
    """The page's limits: ≤ MAX_UPLOAD_MB, ≤ MAX_SECONDS, a decodable video under the pixel limit."""
    name = Path(path).name
    if size_bytes > MAX_UPLOAD_MB * 1024 * 1024:
        raise VideoError(f"{name}: {size_bytes / 2**20:.1f} MB, more than the page's {MAX_UPLOAD_MB} MB limit")
    info = probe(path)
    if info.duration > MAX_SECONDS:
        raise VideoError(f"{name}: {info.duration:.0f} s long, more than the page's {MAX_SECONDS:.0f} s limit; "
                         f"use `python -m engine segment-video` for long clips")
    return info


def default_review_threshold(clf: Any, percent: float = 10.0) -> float:
    """The classifier's calibrated review threshold (flag ~`percent` % of typical frames), else the fixed
    uncalibrated one."""
    calib = getattr(clf, "review", None)
    if calib:
        from ..uncertainty.review import ReviewCalibration

        rc = ReviewCalibration.from_dict(calib)
        if rc is not None:
            return rc.threshold(percent)
    from ..uncertainty.frame_scores import UNCALIBRATED_THRESHOLD

    return UNCALIBRATED_THRESHOLD


def demo_labels(clip: str | Path, demo: str | Path | None) -> Path | None:
    """The shipped labels when `clip` has the same bytes as the demo clip (also when uploaded), else None."""
    import hashlib

    if demo is None or not Path(demo).is_file():
        return None
    labels = Path(demo).with_name(Path(demo).stem + "_labels.npz")
    same = Path(clip).stat().st_size == Path(demo).stat().st_size and \
        hashlib.sha256(Path(clip).read_bytes()).digest() == hashlib.sha256(Path(demo).read_bytes()).digest()
    return labels if same and labels.is_file() else None


def progress(out: str | Path) -> dict[str, Any] | None:
    """The running job's last progress record (frames done/expected, frames/s, seconds left)."""
    p = Path(out) / ".parts" / "progress.json"
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


@dataclass
class VideoResult:
    """A finished segment-video folder."""

    out: Path
    summary: dict[str, Any]
    table: Any  # pandas DataFrame

    @property
    def video(self) -> Path:
        return Path(self.summary["video"]["path"])


def load_result(out: str | Path) -> VideoResult | None:
    """The finished result in OUT, or None while it is not complete."""
    import pandas as pd

    out = Path(out)
    if not (out / "summary.json").is_file():
        return None
    return VideoResult(out, json.loads((out / "summary.json").read_text()), pd.read_parquet(out / "table.parquet"))


def frame_rgb(video: str | Path, index: int) -> np.ndarray:
    """Decode frame `index` (display order) of a clip as upright uint8 RGB."""
    info = probe(video)
    for i, _t, frame in iter_frames(video, info):
        if i == index:
            return to_rgb(frame, info.rotation)
    raise VideoError(f"{Path(video).name}: no frame {index}")


def read_row(npz: str | Path, key: str, row: int) -> np.ndarray:
    """Row `row` of array `key` in an .npz without loading the whole array (the zip entry is read up to it)."""
    import zipfile

    from .outputs import read_npy_header

    with zipfile.ZipFile(npz) as zf, zf.open(f"{key}.npy") as f:
        shape, fortran, dtype = read_npy_header(f)
        if fortran or not 0 <= row < shape[0]:
            raise IndexError(f"{Path(npz).name}: no row {row} in {key} {shape}")
        per_row = int(np.prod(shape[1:])) * dtype.itemsize
        f.seek(f.tell() + row * per_row)
        return np.frombuffer(f.read(per_row), dtype=dtype).reshape(shape[1:])


def frame_maps(result: VideoResult, row: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask uint8 H×W at frame size, uncertainty float32 H×W upsampled from model size) of table row `row`."""
    mask = read_row(result.out / "masks.npz", "masks", row)
    unc = read_row(result.out / "masks.npz", "uncertainty", row).astype(np.float32)
    up = F.interpolate(torch.from_numpy(unc)[None, None], size=mask.shape, mode="bilinear", align_corners=False)
    return mask, up[0, 0].numpy()
