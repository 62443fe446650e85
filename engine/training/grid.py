"""Image grids for looking at samples and data."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import write_bytes_atomic


def make_grid(images: np.ndarray, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """(N,H,W,3) uint8 → one (rows·H, cols·W, 3) uint8 mosaic with `pad` pixel gaps."""
    n, h, w, c = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = img
    return grid


def save_image_grid(images: np.ndarray, path: str | Path, ncol: int | None = None, scale: int = 1) -> Path:
    """Save a mosaic PNG atomically (optionally upscaled by `scale` with nearest neighbour)."""
    img = Image.fromarray(make_grid(images, ncol))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())
    return Path(path)
