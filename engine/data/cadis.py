"""CaDIS loader (layout as distributed: ROOT/VideoNN/Images/*.png + ROOT/VideoNN/Labels/*.png).

All class names, the video split and every class merge are plain data tables below, so a user
can edit them (or add a merge) without touching code. A merge maps the 36 CaDIS ids to the ids of
a smaller class table through a 256-entry lookup table; ids listed under "ignore" become 255.
"""
from __future__ import annotations

import colorsys
import logging
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.data.classes import IGNORE_INDEX, STUDY5, ClassTable
from engine.data.folder import normalize_split as _folder_split
from engine.data.folder import write_folder_dataset
from engine.data.images import ImageError, load_image, load_mask
from engine.data.transforms import fit_square, fit_square_mask
from engine.errors import ConfigError

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- data tables
#: The 36 CaDIS class names, index = id in the label PNGs.
CADIS_CLASSES: list[str] = [
    "pupil", "surgical tape", "hand", "eye retractors", "iris", "skin", "cornea",
    "hydrodissection cannula", "viscoelastic cannula", "capsulorhexis cystotome",
    "Rycroft cannula", "Bonn forceps", "primary knife", "phacoemulsifier handpiece",
    "lens injector", "I/A handpiece", "secondary knife", "micromanipulator",
    "I/A handpiece handle", "capsulorhexis forceps", "Rycroft cannula handle",
    "phacoemulsifier handpiece handle", "capsulorhexis cystotome handle",
    "secondary knife handle", "lens injector handle", "suture needle", "needle holder",
    "Charleux cannula", "primary knife handle", "vitrectomy handpiece", "Mendez ring", "marker",
    "hydrodissection cannula handle", "Troutman forceps", "cotton", "iris hooks",
]

#: Video numbers per split, as in the public CaDIS benchmark code.
VIDEO_SPLIT: dict[str, list[int]] = {
    "train": [1, 3, 4, 6, 8, 9, 10, 11, 13, 14, 15, 17, 18, 19, 20, 21, 23, 24, 25],
    "val": [5, 7, 16],
    "test": [2, 12, 22],
}

_INSTRUMENTS = list(range(7, 36))

#: Merges: target classes in id order as (name, source ids); "ignore" lists ids mapped to 255.
#: Colours come from COLORS below (or a generated palette for names not listed there).
MERGES: dict[str, dict] = {
    # The study's five classes: every instrument, handle, retractor, ring, marker, cotton and
    # hook is "instrument"; surgical tape counts as skin; the surgeon's hand is not scored.
    "study5": {
        "classes": [
            ("pupil", [0]),
            ("iris", [4]),
            ("cornea", [6]),
            ("skin", [5, 1]),
            ("instrument", [3] + _INSTRUMENTS),
        ],
        "ignore": [2],
    },
    # Task I: anatomy and tools kept, all instruments merged (8 classes).
    "task1": {
        "classes": [(CADIS_CLASSES[i], [i]) for i in range(7)] + [("instrument", _INSTRUMENTS)],
        "ignore": [],
    },
    # Task II: instruments grouped with their handles (17 classes), rare tools ignored.
    "task2": {
        "classes": [(CADIS_CLASSES[i], [i]) for i in range(7)]
        + [
            ("cannula", [7, 8, 10, 27, 20, 32]),
            ("capsulorhexis cystotome", [9, 22]),
            ("tissue forceps", [11, 33]),
            ("primary knife", [12, 28]),
            ("phacoemulsifier handpiece", [13, 21]),
            ("lens injector", [14, 24]),
            ("I/A handpiece", [15, 18]),
            ("secondary knife", [16, 23]),
            ("micromanipulator", [17]),
            ("capsulorhexis forceps", [19]),
        ],
        "ignore": [25, 26, 29, 30, 31, 34, 35],
    },
    # Task III: the first 25 classes kept one by one (25 classes), the rest ignored.
    "task3": {
        "classes": [(CADIS_CLASSES[i], [i]) for i in range(25)],
        "ignore": list(range(25, 36)),
    },
}

#: Display colours by class name; study colours first so every merge agrees on them.
COLORS: dict[str, tuple[int, int, int]] = {c.name: c.color for c in STUDY5}
COLORS.update({"surgical tape": (255, 165, 0), "hand": (139, 69, 19), "eye retractors": (0, 128, 128)})

# --------------------------------------------------------------------------- merge helpers


def _palette_color(name: str, index: int) -> tuple[int, int, int]:
    """Colour for a class: COLORS entry, else a golden-ratio hue walk (distinct, deterministic)."""
    if name in COLORS:
        return COLORS[name]
    h = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.65 + 0.35 * (index % 2), 0.95 - 0.25 * (index % 3 == 0))
    return (int(r * 255), int(g * 255), int(b * 255))


def merge_classes(merge: str) -> ClassTable:
    """Class table (names + colours) of a merge."""
    spec = _merge_spec(merge)
    return ClassTable.from_pairs([(n, _palette_color(n, i)) for i, (n, _) in enumerate(spec["classes"])])


def merge_lut(merge: str) -> np.ndarray:
    """256-entry uint8 lookup table CaDIS id -> merged id (255 = ignore or unknown id)."""
    spec = _merge_spec(merge)
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    seen: dict[int, str] = {}
    for target, (name, sources) in enumerate(spec["classes"]):
        for src in sources:
            if src in seen:
                raise ConfigError(f"merge {merge!r}: CaDIS id {src} listed twice ({seen[src]}, {name})")
            seen[src] = name
            lut[src] = target
    for src in spec["ignore"]:
        if src in seen:
            raise ConfigError(f"merge {merge!r}: CaDIS id {src} is both {seen[src]!r} and ignored")
        seen[src] = "ignore"
    return lut


def _merge_spec(merge: str) -> dict:
    """Look up a merge by name with a helpful error."""
    try:
        return MERGES[merge]
    except KeyError:
        raise ConfigError(f"--merge: unknown CaDIS merge {merge!r}; known: {', '.join(MERGES)}") from None


def _normalize_split(split: str) -> str:
    """CaDIS split names: train / val / test / unlabeled (plus common spellings)."""
    key = split.strip().lower()
    if key in ("val", "valid", "validation"):
        return "val"
    return _folder_split(key)


# --------------------------------------------------------------------------- data set


class CadisDataset:
    """CaDIS frames with labels merged on the fly; same interface as FolderDataset."""

    def __init__(self, root: str | Path, merge: str = "study5") -> None:
        self.root = Path(root)
        self.merge = merge
        self.classes: ClassTable = merge_classes(merge)
        self._lut = merge_lut(merge)
        self._images: dict[str, Path] = {}
        self._labels: dict[str, Path] = {}
        self._video: dict[str, int] = {}
        self._scan()

    def _scan(self) -> None:
        """Index VideoNN/Images and VideoNN/Labels; stems are '<VideoNN>_<frame stem>'."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: CaDIS root does not exist")
        for vdir in sorted(self.root.iterdir()):
            m = re.fullmatch(r"video0*(\d+)", vdir.name, flags=re.IGNORECASE)
            if not (vdir.is_dir() and m):
                continue
            img_dir = vdir / "Images"
            if not img_dir.is_dir():
                log.warning("%s: no Images/ folder, skipped", vdir)
                continue
            for p in sorted(img_dir.glob("*.png")):
                stem = f"{vdir.name}_{p.stem}"
                self._images[stem] = p
                self._video[stem] = int(m.group(1))
                label = vdir / "Labels" / p.name
                if label.is_file():
                    self._labels[stem] = label
        if not self._images:
            raise FileNotFoundError(
                f"{self.root}: no CaDIS frames found; expected ROOT/VideoNN/Images/*.png "
                "and ROOT/VideoNN/Labels/*.png"
            )

    def stems(self, split: str) -> list[str]:
        """Frames of a split by video: train/val/test labelled; 'unlabeled' = all train-video frames."""
        name = _normalize_split(split)
        videos = set(VIDEO_SPLIT["train" if name == "unlabeled" else name])
        return [
            s for s in self._images
            if self._video[s] in videos and (name == "unlabeled" or s in self._labels)
        ]

    def image_path(self, stem: str) -> Path:
        """Path of the frame PNG."""
        try:
            return self._images[stem]
        except KeyError:
            raise KeyError(f"{self.root}: no CaDIS frame {stem!r}") from None

    def has_mask(self, stem: str) -> bool:
        """Whether the frame has a label PNG."""
        return stem in self._labels

    def image(self, stem: str) -> np.ndarray:
        """Float32 HxWx3 RGB in [0, 1]."""
        return load_image(self.image_path(stem))

    def raw_mask(self, stem: str) -> np.ndarray:
        """Original CaDIS ids (0..35), validated."""
        try:
            path = self._labels[stem]
        except KeyError:
            raise KeyError(f"{self.root}: frame {stem!r} has no label") from None
        mask = load_mask(path)
        bad = np.unique(mask[(mask >= len(CADIS_CLASSES)) & (mask != IGNORE_INDEX)])
        if bad.size:
            raise ImageError(f"{path}: values {bad[:8].tolist()} are not CaDIS ids 0..35")
        return mask

    def mask(self, stem: str) -> np.ndarray:
        """Merged uint8 HxW ids of this data set's merge (255 = ignore)."""
        return self._lut[self.raw_mask(stem)]

    def __repr__(self) -> str:
        return f"CadisDataset({self.root}, merge={self.merge!r}, {len(self._images)} frames)"


def _evenly(stems: list[str], n: int | None) -> list[str]:
    """Up to ``n`` stems spread evenly over the sorted list (all when n is None)."""
    if n is None or n >= len(stems):
        return list(stems)
    idx = np.linspace(0, len(stems) - 1, n).round().astype(int)
    return [stems[i] for i in idx]


def export_cadis(
    root: str | Path,
    out: str | Path,
    merge: str = "study5",
    n_train: int | None = 20,
    n_test: int | None = 100,
    n_unlabelled: int | None = None,
    size: int | None = None,
    test_split: str = "test",
) -> Path:
    """Write CaDIS as a folder data set (images, merged masks, classes.json, split.json).

    Train frames are spread evenly over the training videos, test frames over ``test_split``
    videos ('test' or 'val'); the unlabelled pool is train-video frames. ``size`` optionally
    stores square crops (``fit_square``) instead of full frames.
    """
    ds = CadisDataset(root, merge)
    train = _evenly(ds.stems("train"), n_train)
    test = _evenly(ds.stems(test_split), n_test)
    unlabeled = _evenly(ds.stems("unlabeled"), n_unlabelled)
    labelled = set(train) | set(test)
    order = list(dict.fromkeys(train + test + unlabeled))

    def items() -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
        for stem in order:
            img = ds.image(stem)
            mask = ds.mask(stem) if stem in labelled else None
            if size is not None:
                img = fit_square(img, size)
                mask = fit_square_mask(mask, size) if mask is not None else None
            yield stem, (img * 255.0 + 0.5).astype(np.uint8), mask

    split = {"train": train, "test": test, "unlabeled": unlabeled}
    log.info("exporting CaDIS (%s): %d train, %d test, %d unlabelled", merge, len(train), len(test), len(unlabeled))
    return write_folder_dataset(out, ds.classes, items(), split)
