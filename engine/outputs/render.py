"""Turning predictions into pictures: colour masks, overlays, contours, uncertainty heatmaps.

One palette (the data set's ClassTable) serves the CLI outputs, the dashboard and exports.
"""
from __future__ import annotations

import numpy as np

from ..data.classes import IGNORE_INDEX, ClassTable


def overlay(image: np.ndarray, mask: np.ndarray, classes: ClassTable, opacity: float = 0.5,
            contours: bool = False) -> np.ndarray:
    """Blend class colours over an image (HxWx3 float [0,1] or uint8) → uint8; ignore (IGNORE_INDEX) stays clear."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    img = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    if img.shape[:2] != mask.shape:
        raise ValueError(f"image {img.shape[:2]} and mask {mask.shape} sizes differ")
    colour = classes.colorize(mask).astype(np.float32) / 255.0
    valid = (mask != IGNORE_INDEX)[..., None]
    out = np.where(valid, (1 - opacity) * img + opacity * colour, img)
    if contours:
        edge = boundaries(mask)
        out[edge] = colour[edge]
    return (out.clip(0, 1) * 255).round().astype(np.uint8)


def boundaries(mask: np.ndarray) -> np.ndarray:
    """Boolean map of pixels whose right or lower neighbour has another label."""
    edge = np.zeros(mask.shape, dtype=bool)
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge[:-1, :] |= mask[:-1, :] != mask[1:, :]
    return edge


def heatmap(values: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """Scalar map → uint8 RGB with a perceptual dark-blue→yellow ramp (viridis-like), 0..vmax."""
    v = np.asarray(values, dtype=np.float32)
    top = float(vmax if vmax is not None else (np.nanmax(v) if v.size else 1.0)) or 1.0
    x = np.clip(v / top, 0, 1)
    stops = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float32)
    pos = x * (len(stops) - 1)
    i = np.clip(pos.astype(int), 0, len(stops) - 2)
    f = (pos - i)[..., None]
    return ((1 - f) * stops[i] + f * stops[i + 1]).round().astype(np.uint8)


def class_areas(mask: np.ndarray, classes: ClassTable) -> list[dict[str, object]]:
    """Pixel count and share of each class in a mask (ignore excluded from shares)."""
    counts = np.bincount(mask[mask != IGNORE_INDEX].ravel(), minlength=classes.num_classes)[: classes.num_classes]
    total = max(int(counts.sum()), 1)
    return [{"class": c.name, "pixels": int(n), "share": float(n) / total} for c, n in zip(classes, counts)]
