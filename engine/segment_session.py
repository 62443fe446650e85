"""Segmenting in-memory frames (uploads) and packaging the outputs: the engine side of the Segment page."""
from __future__ import annotations

import csv
import io
import logging
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .classifier import SegmentationClassifier
from .data.images import ImageError, load_image
from .data.transforms import probs_to_original, resize_shorter, to_tensor
from .render import class_areas, heatmap, overlay
from .safe_names import csv_row, safe_stem, unique_stems
from .segment_outputs import png_bytes

log = logging.getLogger(__name__)


@dataclass
class FrameResult:
    """One segmented frame at its original size."""

    name: str
    image: np.ndarray  # uint8 HxWx3
    labels: np.ndarray  # uint8 HxW class ids
    uncertainty: np.ndarray  # float32 HxW Jensen-Shannon divergence (nats)
    score: float  # per-image uncertainty (mean of the top 10 % of pixels)
    familiarity: Any = None  # engine.uncertainty.familiarity.Verdict: does the frame look like the training frames?

    @property
    def stem(self) -> str:
        """A file-name-safe stem of the uploaded name (for downloads; `name` stays as uploaded)."""
        return safe_stem(self.name)


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


def segment_frame(clf: SegmentationClassifier, source: bytes | str, name: str,
                  familiarity: tuple[Any, str] | None = None) -> FrameResult:
    """Decode (ImageError on a bad file) and segment one frame of any size; also judge whether it looks like
    the run's training frames (`familiarity` as from familiarity.load_for_run; loaded when not given)."""
    from .uncertainty.familiarity import assess_frame, load_for_run
    from .uncertainty.scorecard import familiarity_input

    image = load_image(source, name=name)
    fam_model, why = familiarity if familiarity is not None else load_for_run(clf.run)
    with torch.inference_mode():
        verdict = assess_frame(clf.run, familiarity_input(image, clf.run), fam_model, why)
        pred, labels = clf.predict_image(image)
        js = F.interpolate(pred.js[None, None].float(), size=image.shape[:2], mode="bilinear",
                           align_corners=False)[0, 0].numpy()
    img8 = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return FrameResult(name, img8, labels, js.astype(np.float32), float(pred.score), verdict)


@dataclass
class CondDiffResult:
    """One frame segmented by conditional diffusion: mean of K sampled masks + their spread."""

    name: str
    labels: np.ndarray  # uint8 HxW class ids (argmax of the mean probabilities)
    variance: np.ndarray  # float32 HxW, summed over classes, across the K samples
    entropy: np.ndarray  # float32 HxW entropy (nats) of the mean probabilities
    score: float  # per-image uncertainty: mean of the top 10 % variance pixels
    review: bool  # score above the method's review threshold
    samples: int


def segment_frame_conddiff(method, source: bytes | str, name: str, k: int = 5, seed: int = 0) -> CondDiffResult:  # noqa: ANN001
    """Decode (ImageError on a bad file) and segment one frame of any size with K conditional-diffusion samples."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    image = load_image(source, name=name)
    small, _meta = resize_shorter(image, method.ctx.image_size, multiple=method.net.downsample_factor)
    with torch.inference_mode():
        out = method.predict(to_tensor(small), k=k, seed=seed)
        hw = image.shape[:2]
        probs = probs_to_original(out.probs, hw)
        maps = probs_to_original(torch.stack([out.uncertainty["variance"], out.uncertainty["entropy"]]), hw)
    labels = probs.argmax(dim=0).numpy().astype(np.uint8)
    return CondDiffResult(name, labels, maps[0].numpy().astype(np.float32), maps[1].numpy().astype(np.float32),
                          float(out.score), bool(out.extra["review"]), k)


def shrink(array: np.ndarray, max_side: int = 1024, nearest: bool = False) -> np.ndarray:
    """A display copy with the longer side at most `max_side` (masks: nearest neighbour)."""
    h, w = array.shape[:2]
    if max(h, w) <= max_side:
        return array
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(array).resize(size, Image.NEAREST if nearest else Image.BILINEAR))


def uncertainty_scale(result: FrameResult) -> float:
    """Top of the heatmap's colour scale: the frame's 99.5th percentile JS (at least 0.01 nats)."""
    return max(float(np.quantile(result.uncertainty, 0.995)), 0.01)


def uncertainty_rgb(result: FrameResult, vmax: float | None = None) -> np.ndarray:
    """Heatmap of the JS divergence (dark = members agree), 0..vmax nats (default: uncertainty_scale)."""
    return heatmap(result.uncertainty, vmax=vmax if vmax is not None else uncertainty_scale(result))


def colour_bar(vmax: float, width: int = 360, height: int = 14, low: str = "members agree",
               high: str = "members disagree") -> np.ndarray:
    """A labelled horizontal colour bar for the uncertainty heatmap (same ramp as `heatmap`), 0 … vmax."""
    from PIL import ImageDraw

    ramp = heatmap(np.tile(np.linspace(0, 1, width, dtype=np.float32), (height, 1)), vmax=1.0)
    canvas = Image.new("RGB", (width, height + 16), "white")
    canvas.paste(Image.fromarray(ramp), (0, 0))
    d = ImageDraw.Draw(canvas)
    d.text((1, height + 2), f"0 ({low})", fill="black")
    right = f"{vmax:.2f} ({high})"
    d.text((width - 1 - d.textlength(right), height + 2), right, fill="black")
    return np.asarray(canvas)


def outputs_zip(results: list[FrameResult], clf: SegmentationClassifier, opacity: float = 0.5,
                review_threshold: float | None = None) -> bytes:
    """ZIP of every frame's indexed mask, colour mask, overlay and uncertainty PNGs + labelmap.txt + summary.csv.

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
            z.writestr(f"{stem}_mask.png", png_bytes(r.labels, classes.colors))
            z.writestr(f"{stem}_color.png", png_bytes(classes.colorize(r.labels)))
            z.writestr(f"{stem}_overlay.png", png_bytes(overlay(r.image, r.labels, classes, opacity)))
            z.writestr(f"{stem}_uncertainty.png", png_bytes(uncertainty_rgb(r)))
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
