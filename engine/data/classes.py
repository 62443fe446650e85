"""Class tables: id, name and display colour of each segmentation class (one palette for all tools)."""
from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from engine.atomic import write_json_atomic
from engine.errors import DataError
from engine.validation import read_json, show

log = logging.getLogger(__name__)

#: Mask value meaning "not labelled / do not score".
IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassInfo:
    """One segmentation class: contiguous id, human name and RGB display colour."""

    id: int
    name: str
    color: tuple[int, int, int]


#: Longest class name accepted (names label legends, CSV columns and labelmap.txt lines).
MAX_NAME_LENGTH = 64


def _class_problem(cid: Any, name: Any, color: Any) -> str | None:
    """What is wrong with one class entry (types are checked, never coerced), or None."""
    if isinstance(cid, bool) or not isinstance(cid, int):
        return f"id must be a whole number 0..{IGNORE_INDEX - 1}, got {show(cid)}"
    if not 0 <= cid < IGNORE_INDEX:
        return f"id must be in 0..{IGNORE_INDEX - 1} ({IGNORE_INDEX} means ignore), got {cid}"
    if not isinstance(name, str):
        return f"name must be a string, got {show(name)}"
    if not name.strip() or name != name.strip():
        return f"name must be non-empty without leading/trailing spaces, got {name!r}"
    if len(name) > MAX_NAME_LENGTH:
        return f"name longer than {MAX_NAME_LENGTH} characters"
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        return f"name {name!r} holds a control character (newline, tab, ...)"
    if ":" in name:
        return f"name {name!r} holds ':' (labelmap.txt uses it as the separator)"
    if (not isinstance(color, (list, tuple)) or len(color) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in color)):
        return f"color must be three whole numbers 0..255, got {show(list(color) if isinstance(color, tuple) else color)}"
    return None


class ClassTable:
    """Ordered list of classes with ids 0..C-1; the single source of names and colours."""

    def __init__(self, classes: Iterable[ClassInfo]) -> None:
        items = sorted(classes, key=lambda c: c.id)
        if not items:
            raise DataError("class table is empty")
        for c in items:
            problem = _class_problem(c.id, c.name, c.color)
            if problem:
                raise DataError(f"class {c.id}: {problem}")
        if len(items) > IGNORE_INDEX:
            raise DataError(f"at most {IGNORE_INDEX} classes (id 255 is ignore), got {len(items)}")
        ids = [c.id for c in items]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise DataError(f"class id {dupes[0]} is used twice")
        if ids != list(range(len(items))):
            raise DataError(f"class ids must be contiguous 0..{len(items) - 1}, got {ids}")
        names = [c.name for c in items]
        dupes_n = sorted({n for n in names if names.count(n) > 1})
        if dupes_n:
            raise DataError(f"duplicate class names: {dupes_n}")
        colors = [tuple(c.color) for c in items]
        shared = sorted({col for col in colors if colors.count(col) > 1})
        if shared:
            who = [c.name for c in items if tuple(c.color) == shared[0]]
            raise DataError(f"classes {who} share the colour {list(shared[0])}; every class needs its own colour")
        self._items: tuple[ClassInfo, ...] = tuple(
            ClassInfo(c.id, c.name, tuple(c.color)) for c in items  # type: ignore[arg-type]
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
    def from_dict(cls, data: Any, source: str = "<dict>") -> ClassTable:
        """Parse the classes.json structure strictly (no coercion), with one-line errors that name ``source``."""
        form = '{"classes": [{"id": 0, "name": "pupil", "color": [255, 0, 0]}, ...]}'
        if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
            raise DataError(f"{source}: expected {form}")
        extra = sorted(set(data) - {"classes"})
        if extra:
            raise DataError(f"{source}: unknown key {extra[0]!r} (expected {form})")
        items = []
        for i, d in enumerate(data["classes"]):
            if not isinstance(d, dict) or set(d) != {"id", "name", "color"}:
                keys = sorted(d) if isinstance(d, dict) else show(d)
                raise DataError(f"{source}: classes[{i}]: expected exactly the keys id, name, color; got {keys}")
            problem = _class_problem(d["id"], d["name"], d["color"])
            if problem:
                raise DataError(f"{source}: classes[{i}]: {problem}")
            items.append(ClassInfo(d["id"], d["name"], tuple(d["color"])))  # type: ignore[arg-type]
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
        except DataError as exc:
            raise DataError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> ClassTable:
        """Read a classes.json file (UTF-8)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: classes.json not found")
        return cls.from_dict(read_json(path, DataError), str(path))

    def to_json(self, path: str | Path) -> Path:
        """Write this table as classes.json."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, self.to_dict())
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
