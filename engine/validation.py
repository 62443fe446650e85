"""Strict readers for the JSON files users hand us and the config dataclasses built from them.

Wrong types (`"32"`, `32.0`, `true` where a count is expected), values out of range, missing and unknown
keys all become one line that names the file and the field; nothing is coerced silently. Every config
dataclass builds itself through `strict_from_dict`, with its ranges declared next to it.
"""
from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError, UserError

#: Seeds are fed to torch.Generator.manual_seed after mixing with step counters (seed·1_000_003 + step),
#: so they are bounded well inside 64 bits.
MAX_SEED = 2**32 - 1

T = TypeVar("T")
Check = Callable[[Any], "str | None"]  # returns a problem ("must be …") or None


def show(value: Any) -> str:
    """A short, unambiguous rendering of a JSON value with its JSON type (`"32" (a string)`)."""
    kind = {bool: "true/false", int: "a whole number", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({kind})"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def read_json(path: str | Path, error: type[UserError] = ConfigError) -> Any:
    """Parse a UTF-8 JSON file; encoding and syntax problems (and NaN/Infinity) raise `error` naming it."""
    path = Path(path)
    raw = path.read_bytes()  # OSError (missing, unreadable) names the file itself
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                    f"save the file as UTF-8") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise error(f"{path}: invalid JSON ({e})") from None
    except ValueError as e:  # NaN / Infinity
        raise error(f"{path}: invalid JSON ({e})") from None


def check_format_version(meta: Mapping[str, Any], supported: int, path: str | Path,
                         error: type[UserError] = ConfigError, what: str = "this DiffSeg Studio understands") -> int:
    """The file's `format_version`: a whole number <= `supported` (null, "1", 1.0 and true are refused)."""
    if "format_version" not in meta:
        raise error(f"{path}: missing key 'format_version'")
    version = meta["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise error(f"{path}: format_version must be a whole number >= 0, got {show(version)}")
    if version > supported:
        raise error(f"{path}: format_version {version} is newer than {what} ({supported}); "
                    f"upgrade DiffSeg Studio to use it")
    return version


# ---- single values ---------------------------------------------------------------------------------
def check_type(value: Any, hint: Any) -> tuple[Any, str | None]:
    """(value normalised to `hint`, problem or None) for int, float, bool, str, tuple[int, ...] and `X | None`."""
    if hint is bool:
        return value, None if isinstance(value, bool) else f"expected true or false, got {show(value)}"
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return value, None if ok else f"expected a whole number, got {show(value)}"
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"expected a number, got {show(value)}"
        if not math.isfinite(value):
            return value, f"must be finite, got {value}"
        return float(value), None
    if hint is str:
        return value, None if isinstance(value, str) else f"expected a string, got {show(value)}"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:  # `X | None`: null allowed
        if value is None:
            return None, None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return check_type(value, rest[0])
    if origin is tuple and args and args[-1] is Ellipsis:
        if not isinstance(value, list):
            return value, f"expected a list, got {show(value)}"
        out = []
        for i, item in enumerate(value):
            item, problem = check_type(item, args[0])
            if problem:
                return value, f"item {i}: {problem}"
            out.append(item)
        return tuple(out), None
    raise TypeError(f"check_type: unsupported annotation {hint!r}")  # a bug in a caller, not bad input


def in_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Check:
    """A check that a number (or every number of a list) lies in lo..hi (lo excluded with lo_open)."""

    def check(value: Any) -> str | None:
        items = value if isinstance(value, (tuple, list)) else (value,)
        for v in items:
            if lo is not None and (v <= lo if lo_open else v < lo) or hi is not None and v > hi:
                if lo is not None and hi is not None and not lo_open:
                    return f"must be in {lo}..{hi}, got {v}"
                low = "" if lo is None else (f"> {lo}" if lo_open else f">= {lo}")
                high = "" if hi is None else f"<= {hi}"
                return f"must be {' and '.join(x for x in (low, high) if x)}, got {v}"
        return None

    return check


def one_of(*choices: Any) -> Check:
    """A check that the value is one of `choices`."""

    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(map(str, choices))}; got {show(value)}"

    return check


def length(lo: int, hi: int) -> Check:
    """A check on a list's length."""

    def check(value: Any) -> str | None:
        return None if lo <= len(value) <= hi else f"must hold {lo}..{hi} values, got {len(value)}"

    return check


def strict_from_dict(cls: type[T], data: Any, source: str, *, checks: Mapping[str, Check | tuple[Check, ...]] = {},
                     optional: Mapping[str, Any] = {}, section: str = "",
                     error: type[UserError] = ConfigError) -> T:
    """Build dataclass `cls` from a JSON object, refusing wrong types, failed checks, missing and unknown keys.

    `optional` maps keys that older files may lack to the value they meant then. Errors read
    `SOURCE: SECTION.FIELD: problem` on one line.
    """
    prefix = f"{section}." if section else ""
    if not isinstance(data, dict):
        raise error(f"{source}: {section or 'config'}: expected an object, got {show(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise error(f"{source}: {prefix}{unknown[0]}: unknown key (expected: {', '.join(names)})")
    missing = [n for n in names if n not in data and n not in optional]
    if missing:
        raise error(f"{source}: {prefix}{missing[0]}: missing key" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
    values: dict[str, Any] = {}
    for name in names:
        if name not in data:
            values[name] = optional[name]
            continue
        value, problem = check_type(data[name], hints[name])
        extra = checks.get(name, ())
        for check in extra if isinstance(extra, tuple) else (extra,):
            if problem is None:
                problem = check(value)
        if problem:
            raise error(f"{source}: {prefix}{name}: {problem}")
        values[name] = value
    try:
        return cls(**values)
    except UserError as e:
        raise error(f"{source}: {section or 'config'}: {e}") from None
