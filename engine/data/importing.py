"""Bring unlabelled frames into the folder format, skipping near-duplicates.

Near-duplicate rule: every frame is reduced to a 32×32 grey thumbnail (area average of the whole frame,
aspect ignored, values 0..1); a frame whose mean absolute difference to ANY frame already kept (folders have
no time order) is at most `threshold` is skipped. Same unit and default (0.01, i.e. 2.55 grey levels) as
`data import-video --dedup`, which compares with the last kept frame. Re-encodings of one frame (PNG vs JPEG
q90) differ by about 1 grey level; 0 disables the filter.

`FrameWriter` is the part any importer shares (folders, video decoders): feed it (stem, image array) pairs
through `add`, or a whole iterator through `import_arrays`; it writes OUT/images/<stem>.png atomically and
OUT/classes.json, and never writes masks (imported frames are unlabelled).
"""
from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .classes import STUDY5, ClassTable
from .folder import IMAGE_EXTENSIONS
from .images import ImageError, load_image, save_png_atomic

log = logging.getLogger(__name__)

#: Extensions we try to decode when scanning a folder (anything Pillow/tifffile reads).
READABLE_EXTENSIONS = (*IMAGE_EXTENSIONS, ".bmp", ".webp")
THUMB = 32
DEFAULT_THRESHOLD = 0.01
Progress = Callable[[int, int, str], None]


def thumbnail(image: np.ndarray) -> np.ndarray:
    """32×32 grey (float32 in 0..1) of an HxWx3 image in [0, 1] or uint8: the near-duplicate signature."""
    arr = np.asarray(image)
    rgb = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    grey = rgb[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32) if rgb.ndim == 3 else rgb
    im = Image.fromarray(np.clip(grey, 0, 1).astype(np.float32), mode="F")
    return np.asarray(im.resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.float32)


class NearDuplicateFilter:
    """Remembers the thumbnails of kept frames; `check` says whether a new frame nearly repeats one."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0 <= threshold <= 1:
            raise ValueError(f"near-duplicate threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold
        self._thumbs = np.zeros((0, THUMB * THUMB), dtype=np.float32)
        self._stems: list[str] = []

    def check(self, image: np.ndarray) -> tuple[str, float] | None:
        """(stem, distance) of the nearest kept frame when within the threshold, else None."""
        if self.threshold <= 0 or not self._stems:
            return None
        d = np.abs(self._thumbs - thumbnail(image).reshape(1, -1)).mean(axis=1)
        i = int(np.argmin(d))
        return (self._stems[i], float(d[i])) if d[i] <= self.threshold else None

    def keep(self, stem: str, image: np.ndarray) -> None:
        """Remember a kept frame."""
        self._thumbs = np.vstack([self._thumbs, thumbnail(image).reshape(1, -1)])
        self._stems.append(stem)


@dataclass
class ImportReport:
    """What an import did: frames written, near-duplicates and files skipped, each with a reason."""

    out: Path
    written: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str, float]] = field(default_factory=list)  # (source, kept stem, distance)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, why: not an image)
    errors: list[str] = field(default_factory=list)  # one line per unreadable/truncated/empty file

    def to_dict(self) -> dict:
        return {"out": str(self.out), "written": len(self.written), "near_duplicates": len(self.duplicates),
                "skipped": len(self.skipped), "errors": len(self.errors)}


def safe_stem(text: str) -> str:
    """A file-system-safe stem: path separators become '__', other odd characters '_'."""
    s = re.sub(r"[\\/]+", "__", text)
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("._")
    return s or "frame"


class FrameWriter:
    """Writes imported frames into a folder data set (images/ + classes.json), near-duplicates filtered.

    The API an importer (a folder scanner, a video decoder) calls:
        w = FrameWriter(out, classes, threshold, append=False)
        w.add(stem, rgb)            # uint8 HxWx3 or float [0,1]; returns True when written
        report = w.report
    """

    def __init__(self, out: str | Path, classes: ClassTable | None = None, threshold: float = DEFAULT_THRESHOLD,
                 append: bool = False) -> None:
        self.out = Path(out)
        self.images = self.out / "images"
        existing = sorted(p for p in self.images.iterdir() if p.is_file()) if self.images.is_dir() else []
        cls_path = self.out / "classes.json"
        if existing and not append:
            raise FileExistsError(f"{self.images}: already holds {len(existing)} file(s); pass --append to add "
                                  "frames to this data set, or choose an empty OUT")
        if append and cls_path.is_file():
            have = ClassTable.from_json(cls_path)
            if classes is not None and classes != have:
                raise ValueError(f"{cls_path}: the data set's class table {have.names} differs from the one "
                                 f"given {classes.names}; drop --classes to keep the data set's")
            self.classes = have
        else:
            self.classes = classes or STUDY5
        self.filter = NearDuplicateFilter(threshold)
        self.report = ImportReport(self.out)
        self._taken = {p.stem for p in existing}
        for p in existing:  # an append is deduplicated against the frames already there
            try:
                self.filter.keep(p.stem, load_image(p))
            except ImageError as e:
                log.warning("%s", e)
        self.images.mkdir(parents=True, exist_ok=True)
        if not cls_path.is_file():
            self.classes.to_json(cls_path)

    def unique_stem(self, stem: str) -> str:
        """`stem`, or `stem_2`, `stem_3`, … when taken (two sources can share a name)."""
        base, k, s = safe_stem(stem), 2, safe_stem(stem)
        while s in self._taken:
            s, k = f"{base}_{k}", k + 1
        return s

    def add(self, stem: str, image: np.ndarray, source: str | None = None, copy_from: Path | None = None) -> bool:
        """Write one frame unless it nearly duplicates a kept one. `copy_from` keeps the original file's bytes
        (PNG/JPEG/TIFF, any bit depth) instead of re-encoding the array as PNG."""
        dup = self.filter.check(image)
        if dup is not None:
            self.report.duplicates.append((source or stem, dup[0], dup[1]))
            return False
        stem = self.unique_stem(stem)
        if copy_from is not None and copy_from.suffix.lower() in IMAGE_EXTENSIONS:
            dst = self.images / f"{stem}{copy_from.suffix.lower()}"
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.copyfile(copy_from, tmp)
            tmp.replace(dst)
        else:
            arr = np.asarray(image)
            if arr.dtype != np.uint8:
                arr = (np.clip(arr, 0, 1) * 255.0 + 0.5).astype(np.uint8)
            save_png_atomic(self.images / f"{stem}.png", arr)
        self._taken.add(stem)
        self.filter.keep(stem, image)
        self.report.written.append(stem)
        return True


def import_arrays(frames: Iterable[tuple[str, np.ndarray]], out: str | Path, classes: ClassTable | None = None,
                  threshold: float = DEFAULT_THRESHOLD, append: bool = False, total: int | None = None,
                  progress: Progress | None = None) -> ImportReport:
    """Write (stem, image) pairs from any source (e.g. decoded video frames) as unlabelled frames."""
    writer = FrameWriter(out, classes, threshold, append)
    for i, (stem, image) in enumerate(frames, 1):
        writer.add(stem, image)
        if progress:
            progress(i, total or 0, stem)
    return writer.report


def scan_folder(src: Path) -> Iterator[tuple[Path, str | None]]:
    """Every file under `src` (sorted, recursive) with None, or a word on why it is not tried as an image."""
    for p in sorted(src.rglob("*")):
        if p.is_dir():
            continue
        rel = p.relative_to(src)
        if any(part.startswith(".") for part in rel.parts):
            yield p, "hidden file"
        elif p.suffix.lower() not in READABLE_EXTENSIONS:
            yield p, f"not an image ({p.suffix or 'no extension'})"
        else:
            yield p, None


def import_frames(src: str | Path, out: str | Path, classes: ClassTable | None = None,
                  threshold: float = DEFAULT_THRESHOLD, append: bool = False,
                  progress: Progress | None = None) -> ImportReport:
    """Import every readable image under `src` (recursive) as unlabelled frames; odd files are skipped with a
    word and unreadable, truncated or empty ones reported one line each (the rest are still imported)."""
    src = Path(src)
    if not src.is_dir():
        raise NotADirectoryError(f"{src}: not a folder of frames")
    out = Path(out)
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ValueError(f"{out}: OUT must not be inside SRC {src} (the import would read its own output)")
    files = list(scan_folder(src))
    writer = FrameWriter(out, classes, threshold, append)
    for i, (path, why) in enumerate(files, 1):
        rel = path.relative_to(src)
        if why is not None:
            writer.report.skipped.append((str(rel), why))
        else:
            try:
                image = load_image(path, name=str(rel))
            except ImageError as e:
                writer.report.errors.append(str(e))
            else:
                writer.add(str(rel.with_suffix("")), image, source=str(rel), copy_from=path)
        if progress:
            progress(i, len(files), str(rel))
    if not writer.report.written:
        log.warning("%s: no frames imported", src)
    return writer.report
