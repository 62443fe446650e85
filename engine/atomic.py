"""Atomic file writes: data goes to a temp file in the same folder, is fsynced, then renamed over the target.

A crash, a kill or a full disk therefore leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically; on any error the previous file is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # "[Errno 28] No space left on device: '<path>'" names the file
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Atomic text write (UTF-8)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Atomic JSON write, indented for humans."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def torch_save_atomic(obj: Any, path: str | Path) -> None:
    """`torch.save` through an in-memory buffer and an atomic rename."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getvalue())
