"""The exceptions that mean "bad input" (shown to users as one line), as opposed to bugs (tracebacks)."""
from __future__ import annotations

from .data.images import ImageError
from .models.checkpoint import CheckpointError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ImageError, CheckpointError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
    PermissionError, OSError,
)
