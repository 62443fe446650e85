"""The engine side of the Segment page: in-memory frames (uploads), display helpers and the ZIP of outputs.

Frames are segmented by `engine.outputs.segment_outputs.segment_frame` and the ZIP's files come from
`engine.outputs.segment_outputs.frame_files`, the same call and writer as the CLI's `segment`.
"""
from __future__ import annotations

import csv
import io
import logging
import zipfile

import numpy as np
from PIL import Image

from ..segmentation.classifier import SegmentationClassifier
from ..data.images import ImageError
from ..errors import UserError
from ..methods.base import Method
from ..outputs.render import class_areas, heatmap
from ..safe_names import csv_row, unique_stems
from ..outputs.segment_outputs import FrameResult, frame_files, segment_frame

__all__ = ["FrameResult", "segment_frame", "segment_frame_conddiff", "upload_error", "shrink", "uncertainty_scale",
           "uncertainty_rgb", "outputs_zip"]

log = logging.getLogger(__name__)


def upload_error(name: str, exc: BaseException) -> str:
    """One line for a frame that could not be segmented (any failure, out-of-memory included), naming it;
    the traceback goes to the server log, not to the page."""
    if isinstance(exc, ImageError):
        return str(exc)
    log.error("segmenting %r failed", name, exc_info=exc)
    detail = " ".join(str(exc).split())[:200] or type(exc).__name__
    if isinstance(exc, MemoryError) or "memory" in detail.lower():
        return f"{name}: not enough memory to segment this frame ({detail}); try a smaller image"
    return f"{name}: could not be segmented ({type(exc).__name__}: {detail})"


def segment_frame_conddiff(method: Method, source: bytes | str, name: str, k: int = 5, seed: int = 0) -> FrameResult:
    """A sampling method (conditional diffusion) on one frame of any size: the mean of K sampled masks,
    with variance and entropy maps (`segment_frame` with k and seed)."""
    if k < 1:
        raise UserError(f"k must be >= 1, got {k}")
    return segment_frame(method, source, name, k=k, seed=seed)


def shrink(array: np.ndarray, max_side: int = 1024, nearest: bool = False) -> np.ndarray:
    """A display copy with the longer side at most `max_side` (masks: nearest neighbour)."""
    h, w = array.shape[:2]
    if max(h, w) <= max_side:
        return array
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR))


def uncertainty_scale(result: FrameResult) -> float:
    """Top of the on-screen heatmap's colour scale: the frame's 99.5th percentile JS (at least 0.01 nats),
    so one frame's detail is visible; the files use a fixed scale (segment_outputs.uncertainty_vmax)."""
    return max(float(np.quantile(result.uncertainty, 0.995)), 0.01)


def uncertainty_rgb(result: FrameResult, vmax: float | None = None) -> np.ndarray:
    """Heatmap of the JS divergence (dark = members agree), 0..vmax nats (default: uncertainty_scale)."""
    return heatmap(result.uncertainty, vmax=vmax if vmax is not None else uncertainty_scale(result))


def colour_bar(vmax: float, width: int = 360, height: int = 14, low: str = "members agree",
               high: str = "members disagree", labelled: bool = True) -> np.ndarray:
    """A horizontal colour bar for the uncertainty heatmap (same ramp as `heatmap`), 0 … vmax; with `labelled`
    the two ends are written under it (without, a page writes them as text that stays readable when scaled)."""
    from PIL import ImageDraw

    ramp = heatmap(np.tile(np.linspace(0, 1, width, dtype=np.float32), (height, 1)), vmax=1.0)
    if not labelled:
        return ramp
    canvas = Image.new("RGB", (width, height + 16), "white")
    canvas.paste(Image.fromarray(ramp), (0, 0))
    d = ImageDraw.Draw(canvas)
    d.text((1, height + 2), f"0 ({low})", fill="black")
    right = f"{vmax:.2f} ({high})"
    d.text((width - 1 - d.textlength(right), height + 2), right, fill="black")
    return np.asarray(canvas)


def outputs_zip(results: list[FrameResult], clf: SegmentationClassifier, opacity: float = 0.5,
                review_threshold: float | None = None, contours: bool = False) -> bytes:
    """ZIP of every frame's indexed mask, colour mask, overlay (with contours when shown) and uncertainty PNGs
    + labelmap.txt + summary.csv.

    Members are named from safe, de-duplicated stems of the upload names (never a path); summary.csv keeps each
    upload's name (formula-neutralised) with the stem its files got."""
    classes = clf.classes
    buf = io.BytesIO()
    summary = io.StringIO()
    writer = csv.writer(summary)
    writer.writerow(csv_row(["frame", "files", "height", "width", "uncertainty_score", "review",
                             *[f"share_{n}" for n in classes.names], "unfamiliar", "familiarity_percentile"]))
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for r, stem in zip(results, unique_stems([r.name for r in results])):
            for fname, data in frame_files(r, classes, opacity, stem, contours).items():
                z.writestr(fname, data)
            review = review_threshold is not None and r.score > review_threshold
            shares = [a["share"] for a in class_areas(r.labels, classes)]
            fam = r.familiarity
            fam_cells = ([int(fam.unfamiliar), f"{fam.percentile:.2f}"] if fam is not None and fam.available
                         else ["", ""])
            writer.writerow(csv_row([r.name, f"{stem}_*.png", *r.labels.shape, f"{r.score:.5f}", int(review),
                                     *[f"{s:.5f}" for s in shares], *fam_cells]))
        z.writestr("labelmap.txt", classes.labelmap_txt())
        z.writestr("summary.csv", summary.getvalue())
    return buf.getvalue()
