"""`data export`: a labelled folder data set in the formats other tools read.

coco       OUT/annotations.json + OUT/images/: one annotation per (frame, class present), segmentation as
           COCO RLE (pycocotools `mask.encode` on a Fortran-ordered uint8 mask), iscrowd 0 as in COCO-Stuff.
           Category id = class id + 1 (COCO keeps 0 for "unlabelled"); ignore (255) pixels belong to no
           annotation. Images carry `diffseg_split`, categories `color`, so an import restores both.
cvat-mask  CVAT "Segmentation mask 1.1": labelmap.txt (`name:R,G,B::`, background 0,0,0 = our ignore),
           SegmentationClass/<stem>.png (RGB, one exact colour per class), ImageSets/Segmentation/default.txt
           (+ train.txt / test.txt: CVAT subsets), JPEGImages/<stem>.<ext> (the original image files).
nnunet     nnU-Net v2 raw data set DatasetXXX_Name/ (documentation/dataset_format.md of MIC-DKFZ/nnUNet):
           imagesTr/<case>_0000.png (RGB natural images are the one case kept in ONE file, 8-bit PNG
           read by NaturalImage2DIO), labelsTr/<case>.png, dataset.json with channel_names {0: R, 1: G, 2: B},
           labels (background 0, classes consecutive, `ignore` the highest, documentation/ignore_label.md),
           numTraining, file_ending ".png". Our ids start at 0 = pupil with no background class, and nnU-Net
           forbids using 0 for anything but background, so class id k → k + 1, ignore 255 → C + 1 (only
           when a mask holds ignore pixels); a class named "background" is mapped to 0 instead. The map is
           stored in dataset.json under `diffseg_label_map`. Test frames go to imagesTs/ (+ labelsTs/,
           which nnU-Net does not read).
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json_atomic, write_text_atomic
from .classes import IGNORE_INDEX, ClassTable
from .folder import FolderDataset
from .images import save_png_atomic

log = logging.getLogger(__name__)
FORMATS = ("coco", "cvat-mask", "nnunet")


def labelled_stems(ds: FolderDataset) -> list[tuple[str, str]]:
    """(stem, split) of every labelled frame: train and test first, then labelled frames in neither."""
    out, seen = [], set()
    for split in ("train", "test"):
        for s in ds.stems(split):
            if ds.has_mask(s) and s not in seen:
                out.append((s, split))
                seen.add(s)
    for s in ds.stems("unlabeled"):
        if ds.has_mask(s) and s not in seen:
            out.append((s, "none"))
            seen.add(s)
    if not out:
        raise ValueError(f"{ds.root}: no labelled frames to export (masks/ is empty)")
    return out


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


def _empty_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not empty; choose a new OUT folder")
    out.mkdir(parents=True, exist_ok=True)


# ---- COCO -------------------------------------------------------------------------------------------
def export_coco(ds: FolderDataset, out: Path) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    _empty_out(out)
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for i, (stem, split) in enumerate(labelled_stems(ds), 1):
        src = ds.image_path(stem)
        _copy(src, out / "images" / src.name)
        m = ds.mask(stem)
        images.append({"id": i, "file_name": src.name, "height": int(m.shape[0]), "width": int(m.shape[1]),
                       "diffseg_split": split})
        for cid in np.unique(m):
            if cid == IGNORE_INDEX:
                continue
            rle = mask_utils.encode(np.asfortranarray((m == cid).astype(np.uint8)))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(cid) + 1,
                         "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
                         "area": int(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                         "iscrowd": 0})
    cats = [{"id": c.id + 1, "name": c.name, "supercategory": "", "color": list(c.color)} for c in ds.classes]
    doc = {"info": {"description": f"DiffSeg Studio export of {ds.root.name}", "version": "1.0"},
           "licenses": [], "images": images, "annotations": anns, "categories": cats}
    write_json_atomic(out / "annotations.json", doc)
    return {"format": "coco", "out": str(out), "images": len(images), "annotations": len(anns)}


# ---- CVAT Segmentation mask 1.1 --------------------------------------------------------------------------
def cvat_labelmap(classes: ClassTable) -> str:
    """labelmap.txt of CVAT's Segmentation mask format: `# label:color_rgb:parts:actions`, background first."""
    black = [c.name for c in classes if tuple(c.color) == (0, 0, 0)]
    if black:
        raise ValueError(f"class {black[0]!r} is coloured 0,0,0, which CVAT reserves for background; "
                         "give it another colour in classes.json")
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    lines += [f"{c.name}:{c.color[0]},{c.color[1]},{c.color[2]}::" for c in classes]
    return "\n".join(lines) + "\n"


def export_cvat(ds: FolderDataset, out: Path) -> dict[str, Any]:
    _empty_out(out)
    write_text_atomic(out / "labelmap.txt", cvat_labelmap(ds.classes))
    lut = np.zeros((256, 3), dtype=np.uint8)  # 255 (ignore) and anything else → background black
    lut[: ds.classes.num_classes] = ds.classes.colors
    rows = labelled_stems(ds)
    for stem, _split in rows:
        src = ds.image_path(stem)
        _copy(src, out / "JPEGImages" / src.name)
        save_png_atomic(out / "SegmentationClass" / f"{stem}.png", lut[ds.mask(stem)])
    sets = out / "ImageSets" / "Segmentation"
    write_text_atomic(sets / "default.txt", "".join(f"{s}\n" for s, _ in rows))
    for split in ("train", "test"):
        stems = [s for s, sp in rows if sp == split]
        if stems:
            write_text_atomic(sets / f"{split}.txt", "".join(f"{s}\n" for s in stems))
    return {"format": "cvat-mask", "out": str(out), "images": len(rows)}


# ---- nnU-Net v2 ---------------------------------------------------------------------------------------
def nnunet_label_map(classes: ClassTable, has_ignore: bool) -> dict[str, Any]:
    """Our id → nnU-Net label value, and nnU-Net's `labels` dict (background 0, consecutive, ignore highest)."""
    names = [c.name for c in classes]
    bg = next((i for i, n in enumerate(names) if n.lower() == "background"), None)
    ids: dict[int, int] = {}
    if bg is not None:
        ids[bg] = 0
    nxt = 1
    for i in range(len(names)):
        if i != bg:
            ids[i], nxt = nxt, nxt + 1
    labels = {"background": 0}
    labels.update({names[i]: v for i, v in sorted(ids.items(), key=lambda kv: kv[1]) if v != 0})
    if has_ignore:
        ids[IGNORE_INDEX] = nxt
        labels["ignore"] = nxt
    return {"ids": ids, "labels": labels}


def export_nnunet(ds: FolderDataset, out: Path, dataset_id: int = 501, name: str = "DiffSeg") -> dict[str, Any]:
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"--dataset-id must be 1..999 (nnU-Net uses three digits), got {dataset_id}")
    if not name.replace("_", "").isalnum():
        raise ValueError(f"--dataset-name {name!r}: use letters, digits and underscores only")
    root = out / f"Dataset{dataset_id:03d}_{name}"
    _empty_out(root)
    rows = labelled_stems(ds)
    masks = {s: ds.mask(s) for s, _ in rows}
    mapping = nnunet_label_map(ds.classes, any(bool((m == IGNORE_INDEX).any()) for m in masks.values()))
    lut = np.zeros(256, dtype=np.uint8)
    for ours, theirs in mapping["ids"].items():
        lut[ours] = theirs
    n_train = 0
    for stem, split in rows:
        img_dir, lab_dir = ("imagesTs", "labelsTs") if split == "test" else ("imagesTr", "labelsTr")
        rgb = (np.clip(ds.image(stem), 0, 1) * 255.0 + 0.5).astype(np.uint8)  # 8-bit RGB, as NaturalImage2DIO reads
        save_png_atomic(root / img_dir / f"{stem}_0000.png", rgb)
        save_png_atomic(root / lab_dir / f"{stem}.png", lut[masks[stem]])
        n_train += split != "test"
    if n_train == 0:
        raise ValueError(f"{ds.root}: every labelled frame is in the test split; nnU-Net needs training cases")
    doc = {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": mapping["labels"], "numTraining": n_train,
           "file_ending": ".png", "name": name,
           "description": f"DiffSeg Studio export of {ds.root.name}; see diffseg_label_map",
           "diffseg_label_map": {str(k): v for k, v in sorted(mapping["ids"].items())}}
    write_text_atomic(root / "dataset.json", json.dumps(doc, indent=2, sort_keys=False) + "\n")  # label order kept
    return {"format": "nnunet", "out": str(root), "numTraining": n_train, "test": len(rows) - n_train,
            "labels": mapping["labels"]}


def export_dataset(data: str | Path, fmt: str, out: str | Path, **kw: Any) -> dict[str, Any]:
    """Export a folder data set's labelled frames as `fmt` (coco | cvat-mask | nnunet) into `out`."""
    ds, out = FolderDataset(data), Path(out)
    if fmt == "coco":
        return export_coco(ds, out)
    if fmt == "cvat-mask":
        return export_cvat(ds, out)
    if fmt == "nnunet":
        return export_nnunet(ds, out, **kw)
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
