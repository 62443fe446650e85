"""Writing one segmented frame to disk: colour mask, index mask, overlay, uncertainty heatmap (+labelmap)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .atomic import write_bytes_atomic, write_text_atomic
from .classifier import SegmentationClassifier
from .data.images import load_image
from .render import heatmap, overlay


def png_bytes(array: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """PNG bytes of a uint8 array; with `palette` (C,3) an indexed ('P') PNG, 255 mapped to black."""
    img = Image.fromarray(array)
    if palette is not None:
        img = img.convert("P") if img.mode != "L" else Image.fromarray(array, mode="L").convert("P")
        pal = np.zeros((256, 3), dtype=np.uint8)
        pal[: len(palette)] = palette
        img = Image.frombytes("P", img.size, array.tobytes())
        img.putpalette(pal.ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def segment_file(clf: SegmentationClassifier, source: str | Path | bytes, out_dir: Path, stem: str,
                 opacity: float = 0.5, familiarity: tuple[Any, str] | None = None,
                 review_percent: float = 10.0) -> dict[str, Any]:
    """Segment one image file and write <stem>_mask.png (indexed), _color.png, _overlay.png, _uncertainty.png.

    The result also says whether the frame looks like the run's training frames (`familiarity`: the run's
    (FamiliarityModel | None, why-not) as from engine.uncertainty.familiarity.load_for_run, loaded here when
    not given) and whether the mask should be reviewed (about `review_percent` % of typical frames are)."""
    from .uncertainty.familiarity import assess_frame, load_for_run
    from .uncertainty.review import ReviewCalibration, review_decision
    from .uncertainty.scorecard import familiarity_input

    image = load_image(source, name=stem if isinstance(source, (bytes, bytearray)) else str(source))  # errors name the file
    fam_model, why = familiarity if familiarity is not None else load_for_run(clf.run)
    verdict = assess_frame(clf.run, familiarity_input(image, clf.run), fam_model, why)
    pred, labels = clf.predict_image(image)
    review = review_decision(pred.score, ReviewCalibration.from_dict(clf.review), review_percent)
    unc = F.interpolate(pred.js[None, None], size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    files = {
        "mask": out_dir / f"{stem}_mask.png",
        "color": out_dir / f"{stem}_color.png",
        "overlay": out_dir / f"{stem}_overlay.png",
        "uncertainty": out_dir / f"{stem}_uncertainty.png",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(files["mask"], png_bytes(labels, clf.classes.colors))
    write_bytes_atomic(files["color"], png_bytes(clf.classes.colorize(labels)))
    write_bytes_atomic(files["overlay"], png_bytes(overlay(image, labels, clf.classes, opacity)))
    write_bytes_atomic(files["uncertainty"], png_bytes(heatmap(unc.numpy(), vmax=float(np.log(clf.classes.num_classes)))))
    write_text_atomic(out_dir / "labelmap.txt", clf.classes.labelmap_txt())
    return {"input": str(source) if not isinstance(source, bytes) else stem, "stem": stem, "size": list(image.shape[:2]),
            "familiarity": verdict.to_dict(), "unfamiliar": verdict.unfamiliar, "review": review["review"],
            "review_detail": review, "uncertainty_score": pred.score, "temperature": clf.temperature,
            **{k: str(v) for k, v in files.items()}}


def plain_summary(info: dict[str, Any]) -> str:
    """One line in plain words for a segmented file: unfamiliar-input verdict first, then the review flag."""
    fam = info["familiarity"]
    head = fam["message"] if fam["available"] else "Unfamiliar-input check not available."
    if fam.get("unfamiliar"):
        head = "UNLIKE THE TRAINING FRAMES — " + head
    rv = info["review_detail"]
    return f"{info['input']}: {head} {rv['message']}"


def mask_from_labels(labels: torch.Tensor) -> np.ndarray:
    return labels.numpy().astype(np.uint8)
