"""The exceptions that mean "bad input" (shown to users as one line), as opposed to bugs (tracebacks)."""
from __future__ import annotations

from .data.images import ImageError
from .models.checkpoint import CheckpointError
from .output_lock import OutputBusy

USER_ERRORS: tuple[type[BaseException], ...] = (
    ImageError, CheckpointError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
    PermissionError, OSError, OutputBusy,
)


def out_of_memory(exc: BaseException) -> bool:
    """True for Python's MemoryError and torch's allocator failures (CPU 'can't allocate memory', CUDA OOM)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
