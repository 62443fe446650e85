"""`data import-masks`: CVAT "Segmentation mask 1.1" exports and COCO annotation files into the folder format.

CVAT: labelmap.txt gives names and colours (a `background` entry, or 0,0,0, becomes ignore 255); every
SegmentationClass/<stem>.png colour must be one of them exactly (PNG is lossless, so a colour that is not in
the table is an error, never guessed); images come from JPEGImages/ or --images; ImageSets/Segmentation/
train.txt and test.txt, when present, become split.json.
COCO: categories sorted by id become class ids 0..C-1 (a category named "background" becomes ignore);
RLE, compressed or not, and polygon segmentations are rasterised with pycocotools; pixels no annotation
covers are ignore (255); later annotations overwrite earlier ones; `diffseg_split` on images restores splits.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json_atomic
from .classes import IGNORE_INDEX, ClassInfo, ClassTable
from .images import ImageError, image_size, save_png_atomic

log = logging.getLogger(__name__)
IMPORT_FORMATS = ("cvat-mask", "coco")
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def _copy_image(src: Path, images_out: Path, stem: str) -> Path:
    """Copy the image file (bytes kept; formats the folder data set cannot read are re-encoded as PNG)."""
    from .folder import IMAGE_EXTENSIONS

    images_out.mkdir(parents=True, exist_ok=True)
    if src.suffix.lower() in IMAGE_EXTENSIONS:
        dst = images_out / f"{stem}{src.suffix.lower()}"
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.write_bytes(src.read_bytes())
        tmp.replace(dst)
        return dst
    from .images import load_image

    rgb = (load_image(src) * 255.0 + 0.5).astype(np.uint8)
    return save_png_atomic(images_out / f"{stem}.png", rgb)


def _prepare_out(out: Path) -> None:
    if (out / "images").is_dir() and any((out / "images").iterdir()):
        raise FileExistsError(f"{out}: already holds images/; import masks into a new folder")
    out.mkdir(parents=True, exist_ok=True)


def _write_split(out: Path, split: dict[str, list[str]]) -> None:
    if split.get("train") or split.get("test"):
        write_json_atomic(out / "split.json", {k: v for k, v in split.items() if v})


# ---- CVAT ---------------------------------------------------------------------------------------------
def read_labelmap(path: Path) -> tuple[ClassTable, dict[tuple[int, ...], int]]:
    """Classes (background dropped) and the colour → id table (background colour → 255) of a labelmap.txt."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; export from CVAT with 'Segmentation mask 1.1' (it writes labelmap.txt)")
    classes: list[ClassInfo] = []
    colour_ids: dict[tuple[int, ...], int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        try:
            name, rgb = parts[0], tuple(int(v) for v in parts[1].split(","))
            assert len(rgb) == 3
        except (IndexError, ValueError, AssertionError):
            raise ValueError(f"{path}:{n}: expected 'name:R,G,B::', got {line!r}") from None
        if name.lower() == "background" or rgb == (0, 0, 0):
            colour_ids[rgb] = IGNORE_INDEX
            continue
        colour_ids[rgb] = len(classes)
        classes.append(ClassInfo(len(classes), name, rgb))  # type: ignore[arg-type]
    return ClassTable(classes), colour_ids


def colour_mask_to_ids(rgb: np.ndarray, colour_ids: dict[tuple[int, ...], int], label: str) -> np.ndarray:
    """Exact colour → id lookup; any colour missing from the table is an error naming the file."""
    codes = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    out = np.full(codes.shape, 254, dtype=np.uint16)
    for (r, g, b), cid in colour_ids.items():
        out[codes == ((r << 16) | (g << 8) | b)] = cid
    if (out == 254).any():
        bad = np.unique(codes[out == 254])[:5]
        raise ImageError(f"{label}: colour(s) {[(int(c) >> 16, (int(c) >> 8) & 255, int(c) & 255) for c in bad]} "
                         "are not in labelmap.txt")
    return out.astype(np.uint8)


def _find_image(dirs: list[Path], stem: str) -> Path:
    for d in dirs:
        for ext in _IMAGE_EXT:
            for cand in (d / f"{stem}{ext}", d / f"{stem}{ext.upper()}"):
                if cand.is_file():
                    return cand
    raise FileNotFoundError(f"no image for mask {stem!r} in {', '.join(str(d) for d in dirs)}")


def import_cvat(src: Path, out: Path, images: Path | None = None) -> dict[str, Any]:
    from PIL import Image

    classes, colour_ids = read_labelmap(src / "labelmap.txt")
    mask_dir = src / "SegmentationClass"
    if not mask_dir.is_dir():
        raise FileNotFoundError(f"{mask_dir}: missing; not a CVAT 'Segmentation mask 1.1' export")
    _prepare_out(out)
    dirs = [d for d in (images, src / "JPEGImages", src / "images") if d is not None and d.is_dir()]
    stems = []
    for p in sorted(mask_dir.glob("*.png")):
        img_src = _find_image(dirs, p.stem)
        with Image.open(p) as im:  # palette (VOC-style) and RGB masks are read as colours
            if im.mode in ("L", "I", "I;16"):
                raise ImageError(f"{p}: 1-channel mask; export from CVAT with colour masks (the default)")
            arr = np.asarray(im.convert("RGB"))
        mask = colour_mask_to_ids(arr, colour_ids, str(p))
        if mask.shape != tuple(image_size(img_src)):
            raise ImageError(f"{p}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {img_src.name} is not")
        _copy_image(img_src, out / "images", p.stem)
        save_png_atomic(out / "masks" / f"{p.stem}.png", mask)
        stems.append(p.stem)
    if not stems:
        raise ValueError(f"{mask_dir}: no PNG masks")
    classes.to_json(out / "classes.json")
    sets = src / "ImageSets" / "Segmentation"
    split = {k: [s for s in (sets / f"{k}.txt").read_text().split() if s in stems]
             for k in ("train", "test") if (sets / f"{k}.txt").is_file()}
    _write_split(out, split)
    return {"format": "cvat-mask", "out": str(out), "images": len(stems), "classes": classes.names}


# ---- COCO ---------------------------------------------------------------------------------------------
def _coco_file(src: Path) -> Path:
    if src.is_file():
        return src
    for cand in [src / "annotations.json", *sorted((src / "annotations").glob("*.json"))]:
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"{src}: no annotations.json or annotations/*.json")


def _decode(seg: Any, h: int, w: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii") if isinstance(seg["counts"], str) else seg["counts"]}
    return mask_utils.decode(rle).astype(bool)


def import_coco(src: Path, out: Path, images: Path | None = None) -> dict[str, Any]:
    ann_path = _coco_file(src)
    try:
        doc = json.loads(ann_path.read_text(encoding="utf-8"))
        cats = sorted(doc["categories"], key=lambda c: c["id"])
        imgs, anns = doc["images"], doc.get("annotations", [])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{ann_path}: not a COCO annotation file ({e!r})") from None
    cat_ids: dict[int, int] = {}
    infos: list[ClassInfo] = []
    for c in cats:
        if str(c["name"]).lower() == "background":
            cat_ids[c["id"]] = IGNORE_INDEX
            continue
        colour = tuple(c.get("color") or _default_colour(len(infos)))
        cat_ids[c["id"]] = len(infos)
        infos.append(ClassInfo(len(infos), str(c["name"]), colour))  # type: ignore[arg-type]
    classes = ClassTable(infos)
    _prepare_out(out)
    base = ann_path.parent.parent if ann_path.parent.name == "annotations" else ann_path.parent
    dirs = [d for d in (images, base / "images", base) if d is not None and d.is_dir()]
    by_image: dict[int, list[dict]] = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)
    split: dict[str, list[str]] = {"train": [], "test": []}
    for im in imgs:
        stem = Path(im["file_name"]).stem
        src_img = next((d / im["file_name"] for d in dirs if (d / im["file_name"]).is_file()), None)
        if src_img is None:
            src_img = _find_image(dirs, stem)
        h, w = int(im["height"]), int(im["width"])
        mask = np.full((h, w), IGNORE_INDEX, dtype=np.uint8)
        for a in by_image.get(im["id"], []):
            if a["category_id"] not in cat_ids:
                raise ValueError(f"{ann_path}: annotation {a.get('id')} has unknown category {a['category_id']}")
            mask[_decode(a["segmentation"], h, w)] = cat_ids[a["category_id"]]
        _copy_image(src_img, out / "images", stem)
        save_png_atomic(out / "masks" / f"{stem}.png", mask)
        if im.get("diffseg_split") in split:
            split[im["diffseg_split"]].append(stem)
    classes.to_json(out / "classes.json")
    _write_split(out, split)
    return {"format": "coco", "out": str(out), "images": len(imgs), "annotations": len(anns), "classes": classes.names}


def _default_colour(i: int) -> tuple[int, int, int]:
    """A distinct colour for class i when the source has none (golden-angle hues)."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def import_masks(src: str | Path, fmt: str, out: str | Path, images: str | Path | None = None) -> dict[str, Any]:
    """Read a CVAT mask export or a COCO file (+ images) into a new folder data set at `out`."""
    src, out = Path(src), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"{src}: does not exist")
    img = Path(images) if images else None
    if fmt == "cvat-mask":
        return import_cvat(src, out, img)
    if fmt == "coco":
        return import_coco(src, out, img)
    raise ValueError(f"unknown import format {fmt!r}; choose one of {', '.join(IMPORT_FORMATS)}")

