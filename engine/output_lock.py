"""An exclusive lock on an output path, so two processes never write the same run, classifier or report.

    with OutputLock(out_dir):          # raises OutputBusy: "<out_dir> is in use by another process (pid N)"
        ...write out_dir...

The lock is `fcntl.flock` on a hidden file beside the output (`PARENT/.NAME.lock`), not inside it: outputs
are swapped in whole (engine.atomic.atomic_directory), and a lock file inside the swapped folder would
stop guarding it. The kernel drops the lock when its holder exits or is killed, so a stale lock file never
blocks anyone; the file only records the holder's pid for the message. Locks are per process and not
re-entrant across processes; within one process a second OutputLock on the same path is refused too.
The dashboard uses `is_locked(path)` / `OutputLock` to refuse a second job on an output a job is writing.
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType


class OutputBusy(RuntimeError):
    """Another process (or another writer in this one) holds the lock on an output path."""


def lock_path(output: str | Path) -> Path:
    """The lock file that guards `output` (a directory or a file): `PARENT/.NAME.lock`."""
    p = Path(os.path.abspath(output))
    return p.parent / f".{p.name}.lock"


def _holder_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or "x")
    except (OSError, ValueError):
        return None


class OutputLock:
    """Context manager holding an exclusive, non-blocking lock on `output` for its duration."""

    def __init__(self, output: str | Path):
        self.output = Path(output)
        self.path = lock_path(output)
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        """Take the lock or raise OutputBusy naming the output and the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            pid = _holder_pid(self.path)
            who = f"pid {pid}" if pid is not None else "pid unknown"
            raise OutputBusy(f"{self.output} is in use by another process ({who}); wait for it to finish "
                             "or choose another output") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the lock file stays: removing it would race with a waiting writer)."""
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def is_locked(output: str | Path) -> int | None:
    """The pid holding `output`'s lock, or None when nobody holds it (0 when held by an unknown pid)."""
    path = lock_path(output)
    if not path.exists():
        return None
    try:
        with OutputLock(output):
            return None
    except OutputBusy:
        return _holder_pid(path) or 0
