"""Atomic file writes: data goes to a temp file in the same folder, is fsynced, then renamed over the target.

A crash, a kill or a full disk therefore leaves either the old file or the new one, never half of one.
Files get the mode a plain `open(path, "w")` would give them under the current umask (mkstemp's private
0600 is widened back), so outputs a user asked for are as readable as any other file they write.
JSON is written strictly: NaN and Infinity are not JSON, so a document holding one is refused (naming the
key) instead of being written as invalid JSON.
"""
from __future__ import annotations

import ctypes
import errno
import io
import json
import math
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc), else set-and-restore."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:  # os.umask can only be read by setting it; keep the window closed to other threads
        old = os.umask(0o022)
        os.umask(old)
    return old


def default_file_mode() -> int:
    """Mode of a newly created regular file: 0666 minus the umask."""
    return 0o666 & ~current_umask()


def default_dir_mode() -> int:
    """Mode of a newly created directory: 0777 minus the umask."""
    return 0o777 & ~current_umask()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically; on any error the previous file is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())  # mkstemp makes 0600; an output gets a normal file's mode
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


def _first_non_finite(obj: Any, where: str = "") -> str | None:
    """JSON path of the first NaN/Infinity float in `obj` (None when there is none)."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "<top level>")
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = _first_non_finite(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _first_non_finite(v, f"{where}[{i}]")
            if found:
                return found
    return None


def json_text(obj: Any, indent: int | None = None, what: str = "JSON output") -> str:
    """`json.dumps` that refuses NaN/Infinity (they are not JSON) with an error naming the key and `what`."""
    try:
        return json.dumps(obj, indent=indent, allow_nan=False)
    except ValueError:
        key = _first_non_finite(obj)
        if key is None:
            raise
        raise ValueError(f"{what}: refusing to write a non-finite number (NaN or Infinity) at {key!r}; "
                         "the computation that produced it went wrong") from None


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Atomic JSON write, indented for humans; NaN/Infinity refused (ValueError naming the file and key)."""
    write_text_atomic(path, json_text(obj, indent=2, what=str(path)) + "\n")


def torch_save_atomic(obj: Any, path: str | Path) -> None:
    """`torch.save` through an in-memory buffer and an atomic rename."""
    import torch  # here, so image/JSON writers do not pull torch in

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getvalue())


def check_replaceable(dst: str | Path, owned: Iterable[str], what: str = "output") -> None:
    """Refuse (FileExistsError) to replace `dst` unless it is absent, empty, or holds only `owned` paths
    (relative names this writer produces): a folder of someone else's files is never swapped away."""
    dst = Path(dst)
    if dst.is_symlink() or (dst.exists() and not dst.is_dir()):
        raise NotADirectoryError(f"{dst}: exists and is not a directory; choose another {what} path")
    if not dst.exists():
        return
    allowed = {Path(o) for o in owned}
    allowed |= {a for o in list(allowed) for a in o.parents if str(a) != "."}
    foreign = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.relative_to(dst) not in allowed)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FileExistsError(f"{dst}: holds files this command does not write ({shown}); refusing to replace "
                              f"it: choose another {what} path or empty it")


@contextmanager
def atomic_directory(dst: str | Path, owned: Iterable[str] = (), what: str = "output") -> Iterator[Path]:
    """Build a whole directory in a sibling temp folder, then swap it in place of `dst` in one step.

    Yields the temp folder to fill. On success the new folder replaces `dst` in one rename (an atomic
    exchange where the OS has one) and the previous version is deleted; on any error (full disk included)
    the temp folder is removed and `dst` is exactly as it was. Readers see the old directory or the new
    one, never a mix of two writes. An existing `dst` holding anything but `owned` paths is refused
    (check_replaceable). Hold an `engine.output_lock.OutputLock` on `dst` to keep a second writer out.
    """
    dst = Path(dst)
    parent = dst.parent
    check_replaceable(dst, owned, what)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=parent))
    try:
        os.chmod(tmp, default_dir_mode())  # mkdtemp makes 0700; the output gets a normal directory's mode
        yield tmp
        _fsync_tree(tmp)
        if dst.exists():
            _swap_dirs(tmp, dst)  # tmp now holds the previous version
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.rename(tmp, dst)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(dst)
        raise


def _swap_dirs(a: Path, b: Path) -> None:
    """Exchange two directories: in one step where the OS can (Linux renameat2 RENAME_EXCHANGE), else via
    a third name (a crash in between leaves the previous version under `.NAME.*.old` beside it)."""
    if _rename_exchange(a, b):
        return
    old = Path(tempfile.mkdtemp(prefix=f".{b.name}.", suffix=".old", dir=b.parent))
    os.rmdir(old)
    os.rename(b, old)
    try:
        os.rename(a, b)
    except BaseException:
        os.rename(old, b)
        raise
    os.rename(old, a)


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # old kernel or a file system without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_tree(root: Path) -> None:
    """fsync every file under `root` (and the folders), so the rename publishes data that is on disk."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
