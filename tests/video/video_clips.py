"""Small synthetic clips for the video tests (a plain module: test files import it; conftest.py only holds
fixtures, because `from conftest import …` resolves to whichever test folder's conftest was imported first)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.video.writer import Mp4Writer


def disc_frames(n: int, w: int = 48, h: int = 40, seed: int = 0) -> list[np.ndarray]:
    """n frames of a coloured disc moving over a gradient (what the tiny classifier was fitted on)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(n):
        cx, cy = w * (0.3 + 0.4 * i / max(n - 1, 1)), h * 0.5
        img = np.stack([xx / w, yy / h, 1 - xx / w], -1) * 0.8
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < (h * 0.25) ** 2] = (0.9, 0.2, 0.1)
        img = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
        frames.append((img * 255).astype(np.uint8))
    return frames


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    w = Mp4Writer(path, frames[0].shape[1], frames[0].shape[0], fps, crf=12)
    for f in frames:
        w.write(f)
    return w.close()
