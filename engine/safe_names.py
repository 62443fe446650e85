"""User-supplied names (uploads, input paths, class names) made safe for file names, archives and CSV.

One place for the rules, used by `segment`'s output files and the Segment page's ZIP and summary.csv:
* `safe_stem`: a bare file-name stem — no directory parts (`/` or `\\`), no drive or parent references,
  no control, quote or shell-special characters, no leading dots, dashes or spaces (hidden files,
  options), not empty; letters of every script, spaces and `.,+-()[]#` are kept, so names stay readable.
* `unique_stems`: deterministic de-duplication within one run (x, x-2, x-3 …; case-insensitively, so an
  archive unpacked on macOS or Windows cannot overwrite one frame with another).
* `csv_cell`: a spreadsheet formula guard — text starting with = + - @ TAB or CR gets a leading `'`.
The name shown on screen stays what the user gave; only what touches a file system or a spreadsheet changes.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

MAX_STEM_CHARS = 100
FALLBACK_STEM = "frame"
_UNSAFE = re.compile(r"[^\w .,+\-()\[\]#]+")  # \w is Unicode: letters and digits of any script, and _
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_stem(name: str) -> str:
    """The stem (name without directories and its last extension) of `name`, safe as a file name part."""
    base = re.split(r"[\\/]", unicodedata.normalize("NFC", str(name)))[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    stem = _UNSAFE.sub("_", stem)
    stem = re.sub(r"\s+", " ", stem).lstrip(".-+_ ").rstrip(". ")
    stem = stem[:MAX_STEM_CHARS].rstrip(". ")
    return stem or FALLBACK_STEM


def unique_stems(names: Sequence[str]) -> list[str]:
    """`safe_stem` of each name, de-duplicated in order: the first keeps its stem, later ones get -2, -3 …"""
    used: set[str] = set()
    out = []
    for name in names:
        base = safe_stem(name)
        stem, k = base, 1
        while stem.casefold() in used:
            k += 1
            stem = f"{base}-{k}"
        used.add(stem.casefold())
        out.append(stem)
    return out


def csv_cell(value: Any) -> Any:
    """Neutralise text a spreadsheet would run as a formula (OWASP CSV injection); other values unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_row(values: Iterable[Any]) -> list[Any]:
    """`csv_cell` applied to every cell of a row."""
    return [csv_cell(v) for v in values]
