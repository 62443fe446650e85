"""Saving a label into a folder data set: the mask, the train split, and who saved what when.

Order of writes, so a crash at any point leaves a valid data set: (1) split.json is materialised from the
current split (without one, the default rule "first 20 labelled = train" would move frames between train
and test as soon as a new mask appears), (2) masks/<stem>.png is written atomically at the frame's full
resolution, (3) the stem is added to "train" in split.json (atomic), (4) one JSON line is appended to
labels_log.jsonl. Test frames are refused: they are for scoring only.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json_atomic
from ..data.classes import IGNORE_INDEX
from ..data.folder import FolderDataset, validate_mask
from ..data.images import image_size, save_png_atomic
from ..errors import UserError

LOG_FILE = "labels_log.jsonl"


def current_user() -> str:
    """$DIFFSEG_USER, else the login name (the label log's 'who' when the page gives none)."""
    try:
        return os.environ.get("DIFFSEG_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _splits(ds: FolderDataset) -> dict[str, list[str]]:
    return {k: ds.stems(k) for k in ("train", "test", "unlabeled")}


def save_label(data: str | Path, stem: str, mask: np.ndarray, who: str | None = None,
               details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write `mask` (uint8 ids, 255 = ignore) for frame `stem`, put the stem in the train split, log it.

    Returns the log entry. Raises ValueError for a test frame, a wrong size or ids outside the class table.
    """
    root = Path(data)
    ds = FolderDataset(root)
    ds.image_path(stem)  # KeyError naming the stem when there is no such frame
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    validate_mask(mask, image_size(ds.image_path(stem)), ds.classes, f"label for {stem}")
    splits = _splits(ds)
    if stem in splits["test"]:
        raise UserError(f"{stem}: is a test frame (test frames are for scoring only, never labelled here)")
    split_path = root / "split.json"
    if not split_path.is_file():
        write_json_atomic(split_path, splits)  # freeze today's split before a new mask could move frames
    previous = (root / "masks" / f"{stem}.png").is_file()
    path = save_png_atomic(root / "masks" / f"{stem}.png", mask)
    if stem not in splits["train"]:
        splits["train"].append(stem)
    write_json_atomic(split_path, splits)
    counts = np.bincount(mask.ravel(), minlength=256)
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "who": who or current_user(), "stem": stem,
        "action": "relabel" if previous else "label", "mask": f"masks/{path.name}",
        "size": [int(mask.shape[1]), int(mask.shape[0])],
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "class_pixels": {c.name: int(counts[c.id]) for c in ds.classes if counts[c.id]},
        "ignore_pixels": int(counts[IGNORE_INDEX]), **(details or {}),
    }
    append_log(root, entry)
    return entry


def append_log(root: str | Path, entry: dict[str, Any]) -> None:
    """Append one JSON line (flushed and fsynced) to DATA/labels_log.jsonl."""
    line = json.dumps(entry, sort_keys=False) + "\n"
    with open(Path(root) / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_log(root: str | Path) -> list[dict[str, Any]]:
    """Entries of DATA/labels_log.jsonl, oldest first (a torn last line is skipped)."""
    path = Path(root) / LOG_FILE
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def labelling_copy(src: str | Path, out: str | Path, keep_train: int = 4) -> Path:
    """A practice copy of a labelled data set: every image, the test masks, and only the first `keep_train`
    train masks (the other train frames become unlabelled, ready to be suggested and labelled again).
    Its split.json lists train and test only, so every image is in the unlabelled pool."""
    import shutil

    ds, out = FolderDataset(src), Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not empty")
    train, test = ds.stems("train"), ds.stems("test")
    keep = train[:keep_train]
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    ds.classes.to_json(out / "classes.json")
    from ..data.folder import IMAGE_EXTENSIONS

    for p in sorted((ds.root / "images").iterdir()):  # every frame, whatever split.json lists as unlabelled
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
            shutil.copyfile(p, out / "images" / p.name)
    for stem in keep + test:
        shutil.copyfile(ds.mask_path(stem), out / "masks" / f"{stem}.png")
    write_json_atomic(out / "split.json", {"train": keep, "test": test})
    return out
