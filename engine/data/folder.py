"""The folder data set (README "Data sets"): images/, masks/, classes.json, optional split.json.

Split rules when split.json is absent: labelled stems (those with a mask) are sorted, the first
:data:`DEFAULT_N_TRAIN` are "train", the rest "test"; "unlabeled" is every image that is not a test
frame (labelled training frames too, since DDPM pretraining needs no labels). Test frames are for
scoring only: a split.json whose "test" shares stems with "train" or "unlabeled" is refused.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np
import torch

from engine.atomic import write_text_atomic
from engine.data.classes import IGNORE_INDEX, ClassTable
from engine.data.images import ImageError, exif_orientation, image_size, load_image, load_mask, save_png_atomic
from engine.data.transforms import fit_square, fit_square_mask, to_tensor
from engine.errors import DataError, UserError
from engine.validation import read_json, show

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MASK_EXTENSION = ".png"
#: Files in masks/ with these extensions are refused by name (JPEG changes ids at edges; others unsupported).
NON_PNG_MASK_EXTENSIONS = (".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
DEFAULT_N_TRAIN = 20
SPLITS = ("train", "test", "unlabeled")
_SPLIT_ALIASES = {"unlabelled": "unlabeled", "train": "train", "test": "test", "unlabeled": "unlabeled"}


class SegDataset(Protocol):
    """What every data set offers to the rest of the engine (opened by `open_dataset`)."""

    classes: ClassTable
    root: Path

    def stems(self, split: str) -> list[str]: ...
    def image(self, stem: str) -> np.ndarray: ...
    def mask(self, stem: str) -> np.ndarray: ...
    def has_mask(self, stem: str) -> bool: ...


def normalize_split(split: str, where: str = "split") -> str:
    """Canonical split name; accepts the British spelling 'unlabelled'. `where` names the flag or file."""
    key = split.strip().lower() if isinstance(split, str) else ""
    if key not in _SPLIT_ALIASES:
        raise UserError(f"{where}: unknown split {split!r}; valid splits are {', '.join(SPLITS)}")
    return _SPLIT_ALIASES[key]


def validate_mask(mask: np.ndarray, image_hw: tuple[int, int], classes: ClassTable, label: str,
                  orientation: int = 1) -> np.ndarray:
    """Check a mask's size against its image and its values against the class table.

    `orientation` is the image's EXIF orientation: images are read rotated as a viewer shows them, so a
    mask drawn on the stored (unrotated) pixels is the transposed size, and the error says so."""
    exif_note = ""
    if orientation in (5, 6, 7, 8) and mask.shape == tuple(image_hw)[::-1]:
        exif_note = (f"; the image carries EXIF orientation {orientation} (rotated 90°) and is read as a viewer "
                     "shows it, while this mask matches its stored, unrotated pixels: rotate the mask the same way")
    if mask.shape != tuple(image_hw):
        raise ImageError(
            f"{label}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
            f"{image_hw[1]}x{image_hw[0]} (width x height); they must match{exif_note}"
        )
    values = np.unique(mask)
    bad = values[(values >= classes.num_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        raise ImageError(
            f"{label}: mask values {bad[:8].tolist()} are not class ids 0..{classes.num_classes - 1} "
            f"or {IGNORE_INDEX} (ignore)"
        )
    return mask


class FolderDataset:
    """Images (any size, 8/16 bit) with optional index-PNG masks, read from a directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: data set directory does not exist")
        cls_path = self.root / "classes.json"
        if not cls_path.is_file():
            raise FileNotFoundError(
                f"{cls_path}: missing; a folder data set needs classes.json like "
                '{"classes": [{"id": 0, "name": "pupil", "color": [255,0,0]}, ...]}'
            )
        self.classes: ClassTable = ClassTable.from_json(cls_path)
        self._images = self._scan_images()
        self._masks = self._scan_masks()
        self._splits = self._resolve_splits()

    def _scan_images(self) -> dict[str, Path]:
        """Map stem -> image path; refuse two images sharing a stem."""
        img_dir = self.root / "images"
        if not img_dir.is_dir():
            raise FileNotFoundError(f"{img_dir}: missing images/ directory")
        found: dict[str, Path] = {}
        for p in sorted(img_dir.iterdir()):
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
                if p.stem in found:
                    raise DataError(f"{img_dir}: two images share the stem {p.stem!r}: {found[p.stem].name}, {p.name}")
                found[p.stem] = p
        if not found:
            raise DataError(f"{img_dir}: no images with extensions {', '.join(IMAGE_EXTENSIONS)}")
        return found

    def _scan_masks(self) -> dict[str, Path]:
        """Map stem -> mask path for masks whose image exists (orphans are logged, non-PNG masks refused)."""
        mask_dir = self.root / "masks"
        masks: dict[str, Path] = {}
        if not mask_dir.is_dir():
            return masks
        for p in sorted(mask_dir.iterdir()):
            if p.is_file() and p.suffix.lower() in NON_PNG_MASK_EXTENSIONS and not p.name.startswith("."):
                why = ("JPEG's lossy compression changes class ids along every edge"
                       if p.suffix.lower() in (".jpg", ".jpeg") else "only PNG masks are read")
                raise DataError(f"{p}: masks must be 8-bit index PNGs ({why}); save it as {p.stem}{MASK_EXTENSION} "
                                "with one class id per pixel")
            if p.is_file() and p.suffix.lower() == MASK_EXTENSION and not p.name.startswith("."):
                if p.stem in self._images:
                    masks[p.stem] = p
                else:
                    log.warning("%s: mask has no matching image, ignored", p)
        return masks

    def _resolve_splits(self) -> dict[str, list[str]]:
        """Read split.json or apply the default split rule; test frames never join train or unlabeled."""
        labelled = sorted(self._masks)
        split_path = self.root / "split.json"
        if not split_path.is_file():
            test = labelled[DEFAULT_N_TRAIN:]
            return {
                "train": labelled[:DEFAULT_N_TRAIN],
                "test": test,
                "unlabeled": [s for s in sorted(self._images) if s not in set(test)],
            }
        raw = read_json(split_path, DataError)
        if not isinstance(raw, dict):
            raise DataError(f"{split_path}: expected an object with train/test/unlabeled lists, got {show(raw)}")
        splits: dict[str, list[str]] = {}
        for key, stems in raw.items():
            name = normalize_split(key, str(split_path))
            if name in splits:
                raise DataError(f"{split_path}: split {name!r} is given twice ({key!r})")
            if not isinstance(stems, list) or not all(isinstance(s, str) for s in stems):
                raise DataError(f"{split_path}: {key!r} must be a list of stem strings")
            dupes = sorted({s for s in stems if stems.count(s) > 1})
            if dupes:
                raise DataError(f"{split_path}: {key!r} lists {_few(dupes)} more than once")
            missing = [s for s in stems if s not in self._images]
            if missing:
                raise DataError(f"{split_path}: {len(missing)} stem(s) in {key!r} have no image in images/: {_few(missing)}")
            if name in ("train", "test"):
                unlabelled = [s for s in stems if s not in self._masks]
                if unlabelled:
                    raise DataError(f"{split_path}: {len(unlabelled)} stem(s) in {key!r} have no mask in masks/: "
                                    f"{_few(unlabelled)}")
            splits[name] = list(stems)
        test_set = set(splits.get("test", []))
        for other in ("train", "unlabeled"):
            leak = sorted(test_set & set(splits.get(other, [])))
            if leak:
                raise DataError(f"{split_path}: {len(leak)} test stem(s) are also in {other!r}: {_few(leak)}; test "
                                "frames are for scoring only (remove them from one of the lists)")
        splits.setdefault("train", labelled[:DEFAULT_N_TRAIN] if "test" not in splits else [])
        splits.setdefault("test", [s for s in labelled if s not in set(splits["train"])])
        scored = set(splits["test"])
        splits.setdefault("unlabeled", [s for s in sorted(self._images) if s not in scored])
        return splits

    def stems(self, split: str) -> list[str]:
        """Stems of a split: 'train', 'test' or 'unlabeled' (also 'unlabelled')."""
        return list(self._splits[normalize_split(split, "--split")])

    def image_path(self, stem: str) -> Path:
        """Path of the image file for ``stem``."""
        try:
            return self._images[stem]
        except KeyError:
            raise KeyError(f"{self.root}: no image with stem {stem!r}") from None

    def mask_path(self, stem: str) -> Path:
        """Path of the mask file for ``stem`` (KeyError if unlabelled)."""
        try:
            return self._masks[stem]
        except KeyError:
            raise KeyError(f"{self.root}: stem {stem!r} has no mask") from None

    def has_mask(self, stem: str) -> bool:
        """Whether ``stem`` is labelled."""
        return stem in self._masks

    def image(self, stem: str) -> np.ndarray:
        """Float32 HxWx3 RGB in [0, 1]."""
        return load_image(self.image_path(stem))

    def mask(self, stem: str) -> np.ndarray:
        """Validated uint8 HxW class ids (255 = ignore)."""
        path = self.mask_path(stem)
        mask = load_mask(path, palette=None)
        image = self.image_path(stem)
        return validate_mask(mask, image_size(image), self.classes, str(path), exif_orientation(image))

    def __repr__(self) -> str:
        return (
            f"FolderDataset({self.root}, {len(self._images)} images, {len(self._masks)} masks, "
            f"classes={self.classes.names})"
        )


def _few(stems: list[str], n: int = 5) -> str:
    """The first `n` stems, and how many more."""
    return f"{stems[:n]}{f' (+{len(stems) - n} more)' if len(stems) > n else ''}"


def load_labelled(ds: SegDataset, split: str, image_size: int,
                  label_size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images (N,3,S,S) in [-1,1] at the model size and masks long (N,L,L) at the label size, for the
    labelled frames of a split (shorter side resized, centre crop), and their stems."""
    stems = [s for s in ds.stems(split) if ds.has_mask(s)]
    if not stems:
        raise DataError(f"{ds.root}: no labelled frames in split {split!r}")
    images, masks = [], []
    for stem in stems:
        images.append(to_tensor(fit_square(ds.image(stem), image_size)))
        masks.append(torch.from_numpy(fit_square_mask(ds.mask(stem), label_size).astype(np.int64)))
    return torch.stack(images), torch.stack(masks), stems


def open_dataset(path: str | Path) -> SegDataset:
    """The one place a data-set path becomes a SegDataset (every command and page opens data through it).
    Today: the folder format; another on-disk format is one class with the SegDataset methods plus a test
    here that recognises its layout."""
    return FolderDataset(path)


def write_folder_dataset(
    out: str | Path,
    classes: ClassTable,
    items: Iterable[tuple[str, np.ndarray, np.ndarray | None]],
    split: dict[str, list[str]] | None = None,
) -> Path:
    """Write (stem, rgb uint8, mask uint8 | None) items as a folder data set; returns ``out``."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    classes.to_json(out / "classes.json")
    n = 0
    for stem, rgb, mask in items:
        save_png_atomic(out / "images" / f"{stem}.png", rgb)
        if mask is not None:
            if mask.shape != rgb.shape[:2]:
                raise ValueError(f"{stem}: mask shape {mask.shape} != image shape {rgb.shape[:2]}")
            save_png_atomic(out / "masks" / f"{stem}.png", mask)
        n += 1
    if split is not None:
        canon = {normalize_split(k): list(v) for k, v in split.items()}
        write_text_atomic(out / "split.json", json.dumps(canon, indent=1) + "\n")
    log.info("wrote %d items to %s", n, out)
    return out
