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
                 opacity: float = 0.5) -> dict[str, Any]:
    """Segment one image file and write <stem>_mask.png (indexed), _color.png, _overlay.png, _uncertainty.png."""
    image = load_image(source, name=stem if isinstance(source, (bytes, bytearray)) else str(source))  # errors name the file
    pred, labels = clf.predict_image(image)
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
    return {"input": str(source) if not isinstance(source, bytes) else stem, "stem": stem,
            "size": list(image.shape[:2]),
            "uncertainty_score": pred.score, **{k: str(v) for k, v in files.items()}}


def mask_from_labels(labels: torch.Tensor) -> np.ndarray:
    return labels.numpy().astype(np.uint8)
