"""Per-frame measurements of a segmented surgery frame: class areas, instrument presence, pupil size.

Pupil centre and diameter come from the second moments of the pupil pixels (an ellipse with semi-axis a has
variance a²/4 along it), so a thin instrument crossing the pupil barely changes them, where an
area-equivalent circle would shrink. Diameter = mean of the fitted ellipse's two full axes, in pixels of
the original frame.
"""
from __future__ import annotations

import math

import numpy as np

from ..data.classes import ClassTable

INSTRUMENT_MIN_SHARE = 0.001  # an instrument counts as present from 0.1 % of the frame's pixels
MIN_PUPIL_PIXELS = 20


def pupil_geometry(mask: np.ndarray, pupil_id: int) -> tuple[float, float, float]:
    """(centre x, centre y, diameter) in pixels of the class `pupil_id`; NaNs when it is (almost) absent."""
    ys, xs = np.nonzero(mask == pupil_id)
    if len(xs) < MIN_PUPIL_PIXELS:
        return math.nan, math.nan, math.nan
    cx, cy = float(xs.mean()), float(ys.mean())
    dx, dy = xs - cx, ys - cy
    cov = np.array([[np.mean(dx * dx), np.mean(dx * dy)], [np.mean(dx * dy), np.mean(dy * dy)]])
    lam = np.clip(np.linalg.eigvalsh(cov), 0, None)
    diameter = 2.0 * float(np.sqrt(lam[0]) + np.sqrt(lam[1]))  # full axes 4·sqrt(λ), averaged
    return cx, cy, diameter


def frame_row(mask: np.ndarray, classes: ClassTable) -> dict[str, float | int | bool]:
    """Area share of every class (of the frame's pixels), instrument presence and pupil geometry."""
    counts = np.bincount(mask.ravel(), minlength=256)[: classes.num_classes]
    total = float(mask.size)
    row: dict[str, float | int | bool] = {f"area_{c.name}": float(n) / total for c, n in zip(classes, counts)}
    names = {c.name: c.id for c in classes}
    if "instrument" in names:
        row["instrument_present"] = bool(counts[names["instrument"]] / total >= INSTRUMENT_MIN_SHARE)
    if "pupil" in names:
        cx, cy, d = pupil_geometry(mask, names["pupil"])
        row.update({"pupil_cx": cx, "pupil_cy": cy, "pupil_diameter_px": d})
    return row


def flip_share(prev: np.ndarray | None, cur: np.ndarray) -> float:
    """Share of pixels whose class differs from the previous processed frame (flicker); NaN for the first."""
    if prev is None or prev.shape != cur.shape:
        return math.nan
    return float(np.count_nonzero(prev != cur)) / cur.size
