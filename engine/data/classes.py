"""Class tables: id, name and display colour of each segmentation class (one palette for all tools)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: Mask value meaning "not labelled / do not score".
IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassInfo:
    """One segmentation class: contiguous id, human name and RGB display colour."""

    id: int
    name: str
    color: tuple[int, int, int]


class ClassTable:
    """Ordered list of classes with ids 0..C-1; the single source of names and colours."""

    def __init__(self, classes: Iterable[ClassInfo]) -> None:
        items = sorted(classes, key=lambda c: c.id)
        if not items:
            raise ValueError("class table is empty")
        ids = [c.id for c in items]
        if ids != list(range(len(items))):
            raise ValueError(f"class ids must be contiguous 0..{len(items) - 1}, got {ids}")
        if len(items) > IGNORE_INDEX:
            raise ValueError(f"at most {IGNORE_INDEX} classes (id 255 is ignore), got {len(items)}")
        names = [c.name for c in items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate class names: {dupes}")
        for c in items:
            if len(c.color) != 3 or not all(0 <= int(v) <= 255 for v in c.color):
                raise ValueError(f"class {c.name!r}: colour must be three 0..255 ints, got {c.color}")
        self._items: tuple[ClassInfo, ...] = tuple(
            ClassInfo(int(c.id), str(c.name), tuple(int(v) for v in c.color))  # type: ignore[arg-type]
            for c in items
        )

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[str, tuple[int, int, int]]]) -> ClassTable:
        """Build a table from (name, colour) pairs in id order."""
        return cls(ClassInfo(i, n, tuple(c)) for i, (n, c) in enumerate(pairs))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def __getitem__(self, idx: int) -> ClassInfo:
        return self._items[idx]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassTable) and self._items == other._items

    def __repr__(self) -> str:
        return f"ClassTable({', '.join(c.name for c in self._items)})"

    @property
    def num_classes(self) -> int:
        """Number of classes C (ignore not counted)."""
        return len(self._items)

    @property
    def names(self) -> list[str]:
        """Class names in id order."""
        return [c.name for c in self._items]

    @property
    def colors(self) -> np.ndarray:
        """(C, 3) uint8 colours in id order."""
        return np.array([c.color for c in self._items], dtype=np.uint8).reshape(-1, 3)

    def index(self, name: str) -> int:
        """Id of the class called ``name`` (KeyError if absent)."""
        for c in self._items:
            if c.name == name:
                return c.id
        raise KeyError(f"no class named {name!r}; classes are {self.names}")

    def to_dict(self) -> dict:
        """JSON-ready form used by classes.json."""
        return {"classes": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in self._items]}

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> ClassTable:
        """Parse the classes.json structure, with errors that name ``source``."""
        try:
            raw = data["classes"]
            colours = [tuple(int(v) for v in d["color"]) for d in raw]  # three ints: checked by ClassTable
            items = [ClassInfo(int(d["id"]), str(d["name"]), rgb) for d, rgb in zip(raw, colours)]  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{source}: expected {{\"classes\": [{{\"id\": 0, \"name\": ..., \"color\": [r,g,b]}}, ...]}} ({exc!r})"
            ) from None
        try:
            return cls(items)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> ClassTable:
        """Read a classes.json file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: classes.json not found") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON ({exc})") from None
        return cls.from_dict(data, str(path))

    def to_json(self, path: str | Path) -> Path:
        """Write this table as classes.json."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """Map an HxW id mask to HxWx3 uint8 colours; ignore (255) and unknown ids become black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: self.num_classes] = self.colors
        return lut[np.asarray(mask, dtype=np.uint8)]

    def labelmap_txt(self) -> str:
        """CVAT-style labelmap.txt lines ``name:R,G,B`` in id order."""
        return "".join(f"{c.name}:{c.color[0]},{c.color[1]},{c.color[2]}\n" for c in self._items)


#: The study's five classes (ids as in the merged CaDIS masks).
STUDY5 = ClassTable.from_pairs(
    [
        ("pupil", (255, 0, 0)),
        ("iris", (255, 105, 180)),
        ("cornea", (128, 128, 128)),
        ("skin", (255, 215, 0)),
        ("instrument", (128, 0, 128)),
    ]
)
