"""The exceptions that mean "bad input" (shown to users as one line), as opposed to bugs (tracebacks).

Every validation site raises a `UserError` (or a subclass naming the kind of input); the CLI turns exactly
these, plus OS errors about the files a user named, into `error: …` and exit 2. Any other exception,
a plain `ValueError` included, is a bug and keeps its traceback. `UserError` derives from `ValueError` so
callers that caught `ValueError` before (the dashboard pages) still catch bad input.
"""
from __future__ import annotations

from .output_lock import OutputBusy


class UserError(ValueError):
    """Bad input from the user: the message is one line that names the file or flag and the problem."""


class ConfigError(UserError):
    """A configuration (config.json, method.json, a flag's value) that is malformed or out of range."""


class DataError(UserError):
    """A data set (classes.json, split.json, masks, images/) that cannot be used as it is."""


class ImageError(UserError):
    """An image or mask could not be used; the message names the file and the problem."""


class CheckpointError(UserError):
    """A checkpoint (run, classifier, weights) that cannot be used; the message says which file and why."""


class OutputError(UserError):
    """An output location that must not or cannot be written (another artefact, not writable)."""


# What the CLI reports as one line. OSError covers the files a user named (missing, unreadable, disk full):
# its message carries the file name (engine/atomic.py fills it in for writes).
# OutputBusy: another process holds the output's lock (engine/output_lock.py).
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, OSError, OutputBusy)


def out_of_memory(exc: BaseException) -> bool:
    """True for Python's MemoryError and torch's allocator failures (CPU 'can't allocate memory', CUDA OOM)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
