"""Segmenting one frame of any size with any model, and the ONE writer of its output files.

`segment_frame` is the single engine call behind the CLI's `segment` and the dashboard's Segment page:
decode → shorter side to the model size (sides rounded to its multiple) → predict → probabilities and
uncertainty maps back to the input size. `frame_files` makes the output files of a segmented frame
(indexed mask, colour mask, overlay, uncertainty heatmap on a FIXED scale); the CLI writes them to a
folder and the dashboard packs the same bytes into its ZIP.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..atomic import write_bytes_atomic, write_text_atomic
from ..segmentation.classifier import SegmentationClassifier
from ..data.classes import ClassTable
from ..data.images import load_image
from ..data.transforms import probs_to_original, resize_shorter, to_tensor
from ..methods.base import Method, MethodOutput
from .render import heatmap, overlay
from ..safe_names import safe_stem

Segmenter = SegmentationClassifier | Method  # anything that segments a frame
OUTPUT_KINDS = ("mask", "color", "overlay", "uncertainty")


def png_bytes(array: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """PNG bytes of a uint8 array; with `palette` (C,3) an indexed ('P') PNG (ids beyond it, e.g. 255, black)."""
    if palette is not None:
        ids = np.ascontiguousarray(array, dtype=np.uint8)
        img = Image.frombytes("P", (ids.shape[1], ids.shape[0]), ids.tobytes())
        pal = np.zeros((256, 3), dtype=np.uint8)
        pal[: len(palette)] = palette
        img.putpalette(pal.ravel().tolist())
    else:
        img = Image.fromarray(array)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class FrameResult:
    """One segmented frame at its original size."""

    name: str
    image: np.ndarray  # uint8 HxWx3
    labels: np.ndarray  # uint8 HxW class ids
    maps: dict[str, np.ndarray]  # float32 HxW uncertainty maps: js/entropy (ensemble) or variance/entropy (samples)
    score: float  # per-image review score (ensemble: engine/uncertainty/frame_scores.py; conddiff: top-10 % variance)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"review": bool, "samples": K}
    familiarity: Any = None  # engine.uncertainty.familiarity.Verdict (classifiers): does it look like training frames?

    @property
    def stem(self) -> str:
        """A file-name-safe stem of the frame's name (for output files; `name` stays as given)."""
        return safe_stem(self.name)

    @property
    def uncertainty_kind(self) -> str:
        """The primary uncertainty map: the ensemble's JS divergence, else the samples' variance."""
        return "js" if "js" in self.maps else "variance" if "variance" in self.maps else next(iter(self.maps))

    @property
    def uncertainty(self) -> np.ndarray:
        return self.maps[self.uncertainty_kind]

    # conditional diffusion's fields, read by the Segment page
    @property
    def variance(self) -> np.ndarray:
        return self.maps["variance"]

    @property
    def entropy(self) -> np.ndarray:
        return self.maps["entropy"]

    @property
    def review(self) -> bool:
        return bool(self.extra.get("review", False))

    @property
    def samples(self) -> int | None:
        return self.extra.get("samples")


def _geometry(model: Segmenter) -> tuple[int, int]:
    """(model image size, multiple every input side must be rounded to)."""
    if isinstance(model, SegmentationClassifier):
        return model.run.image_size, model.run.model.downsample_factor
    return model.ctx.image_size, model.input_multiple


def _predict(model: Segmenter, x: torch.Tensor, **predict_kw: Any) -> MethodOutput:
    if isinstance(model, SegmentationClassifier):
        p = model.predict_tensor(x)
        # the mask comes from the uncalibrated mean (a temperature never changes the argmax at model size)
        probs = p.raw_probs if p.raw_probs is not None else p.probs
        return MethodOutput(probs, {"js": p.js, "entropy": p.entropy}, p.score)
    return model.predict(x, **predict_kw)


def segment_array(model: Segmenter, image: np.ndarray, name: str, **predict_kw: Any) -> FrameResult:
    """Segment an HxWx3 float [0,1] image of any size; `predict_kw` go to the method (e.g. k, seed)."""
    size, multiple = _geometry(model)
    small, _meta = resize_shorter(image, size, multiple=multiple)
    hw = image.shape[:2]
    with torch.inference_mode():
        out = _predict(model, to_tensor(small), **predict_kw)
        probs = torch.as_tensor(probs_to_original(out.probs.float(), hw))
        names = list(out.uncertainty)
        maps = torch.as_tensor(probs_to_original(torch.stack([out.uncertainty[n].float() for n in names]), hw)) \
            if names else None
    labels = probs.argmax(dim=0).numpy().astype(np.uint8)
    img8 = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    per_map = {n: maps[i].numpy().astype(np.float32) for i, n in enumerate(names)} if maps is not None else {}
    return FrameResult(name, img8, labels, per_map, float(out.score or 0.0), dict(out.extra))


def segment_frame(model: Segmenter, source: bytes | str | Path, name: str,
                  familiarity: tuple[Any, str] | None = None, **predict_kw: Any) -> FrameResult:
    """Decode (ImageError naming the file on a bad one) and segment one frame of any size with any model.

    For a pixel classifier the result also says whether the frame looks like the run's training frames
    (`familiarity`: (FamiliarityModel | None, why-not) as from engine.uncertainty.familiarity.load_for_run,
    loaded when not given)."""
    image = load_image(source, name=name)
    verdict = None
    if isinstance(model, SegmentationClassifier):  # judged first, as the familiarity model was calibrated
        from ..uncertainty.familiarity import assess_frame, load_for_run
        from ..uncertainty.scorecard import familiarity_input

        fam_model, why = familiarity if familiarity is not None else load_for_run(model.run)
        with torch.inference_mode():
            verdict = assess_frame(model.run, familiarity_input(image, model.run), fam_model, why)
    result = segment_array(model, image, name, **predict_kw)
    result.familiarity = verdict
    return result


def uncertainty_vmax(kind: str, classes: ClassTable) -> float:
    """The fixed top of an uncertainty file's colour scale: log C nats for JS / entropy (their maximum),
    1 for the summed class-probability variance (its bound), so files are comparable across frames."""
    return float(np.log(classes.num_classes)) if kind in ("js", "entropy") else 1.0


def frame_files(result: FrameResult, classes: ClassTable, opacity: float = 0.5,
                stem: str | None = None, contours: bool = False) -> dict[str, bytes]:
    """The output files of one segmented frame, name → PNG bytes: <stem>_mask.png (indexed), _color.png,
    _overlay.png (class boundaries drawn when `contours`), _uncertainty.png. The CLI writes these; the
    dashboard's ZIP holds the same bytes."""
    stem = stem or result.stem
    kind = result.uncertainty_kind
    return {
        f"{stem}_mask.png": png_bytes(result.labels, classes.colors),
        f"{stem}_color.png": png_bytes(classes.colorize(result.labels)),
        f"{stem}_overlay.png": png_bytes(overlay(result.image, result.labels, classes, opacity, contours)),
        f"{stem}_uncertainty.png": png_bytes(heatmap(result.uncertainty, vmax=uncertainty_vmax(kind, classes))),
    }


def segment_file(model: Segmenter, source: str | Path | bytes, out_dir: Path, stem: str,
                 opacity: float = 0.5, familiarity: tuple[Any, str] | None = None,
                 review_percent: float = 10.0) -> dict[str, Any]:
    """Segment one image file and write its `frame_files` and labelmap.txt into `out_dir` (atomically).

    For a pixel classifier the result also says whether the frame looks like the run's training frames
    (`familiarity`, see segment_frame) and whether the mask should be reviewed (about `review_percent` % of
    typical frames are)."""
    name = stem if isinstance(source, (bytes, bytearray)) else str(source)  # errors name the file
    result = segment_frame(model, source, name, familiarity)
    classes = model.classes if isinstance(model, SegmentationClassifier) else model.ctx.classes
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fname, data in frame_files(result, classes, opacity, stem).items():
        write_bytes_atomic(out_dir / fname, data)
        paths[fname[len(stem) + 1:-4]] = str(out_dir / fname)
    write_text_atomic(out_dir / "labelmap.txt", classes.labelmap_txt())
    score = result.score if math.isfinite(result.score) else None
    info: dict[str, Any] = {"input": str(source) if not isinstance(source, bytes) else stem, "stem": stem,
                            "size": list(result.image.shape[:2]), "uncertainty_score": score, **paths}
    if isinstance(model, SegmentationClassifier):
        from ..uncertainty.review import ReviewCalibration, review_decision

        review = review_decision(result.score, ReviewCalibration.from_dict(model.review), review_percent)
        verdict = result.familiarity
        info.update({"familiarity": verdict.to_dict(), "unfamiliar": verdict.unfamiliar, "review": review["review"],
                     "review_detail": review, "temperature": model.temperature})
    return info


def plain_summary(info: dict[str, Any]) -> str:
    """One line in plain words for a segmented file: unfamiliar-input verdict first, then the review flag."""
    fam = info["familiarity"]
    head = fam["message"] if fam["available"] else "Unfamiliar-input check not available."
    if fam.get("unfamiliar"):
        head = "UNLIKE THE TRAINING FRAMES — " + head
    rv = info["review_detail"]
    return f"{info['input']}: {head} {rv['message']}"
