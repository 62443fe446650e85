"""What kind of project artefact a directory holds, and whether a command may write its output there.

Outputs go only where they cannot destroy something else: an existing artefact of the same kind may be
replaced (that is what re-running a command means), an empty or missing directory is fine, anything
else (a run, a data set, a classifier of another kind, a non-empty folder of other files) is refused
before any work starts, so a long fit never ends in an unusable `--out`.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import OutputError

RUN, DATASET, CLASSIFIER, METHOD = "run", "data set", "classifier", "saved method"


def artefact_kind(path: str | Path) -> str | None:
    """'run', 'data set', 'classifier', 'saved method' or None, from the files that mark each kind."""
    p = Path(path)
    if not p.is_dir():
        return None
    if (p / "method.json").is_file():
        return METHOD
    if any((p / f).is_file() for f in ("ema.pt", "train_state.pt", "loss.jsonl", "progress.json")):
        return RUN  # (a pretrain stopped before its first checkpoint leaves only its log and progress)
    if (p / "classes.json").is_file() or (p / "images").is_dir():
        return DATASET
    cfg = p / "config.json"
    if cfg.is_file():
        try:
            meta = json.loads(cfg.read_bytes().decode("utf-8", "replace"))
        except ValueError:
            meta = None
        if isinstance(meta, dict) and "unet" in meta:
            return RUN
        if isinstance(meta, dict) and ("run_weights_hash" in meta or "spec" in meta):
            return CLASSIFIER
        if (p / "weights.pt").is_file():
            return CLASSIFIER
    return None


def _visible_entries(p: Path) -> list[str]:
    """Entries of a directory other than hidden ones (`.DS_Store`, editors' files)."""
    return sorted(e for e in os.listdir(p) if not e.startswith("."))


def check_output_dir(path: str | Path, kind: str, flag: str = "--out", may_replace: bool = True) -> Path:
    """Refuse `path` as the output of a `kind` artefact unless it is missing, empty, or (`may_replace`) an
    artefact of the same kind; also check that it can be created and written. Returns the path."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{flag} {p}: exists and is not a directory")
    if p.is_dir():
        found = artefact_kind(p)
        if found is not None and not (found == kind and may_replace):
            raise OutputError(f"{flag} {p}: is a {found}; writing a {kind} there would corrupt it. Choose another {flag}")
        if found is None and _visible_entries(p):
            shown = ", ".join(_visible_entries(p)[:3])
            raise OutputError(f"{flag} {p}: is a non-empty directory that is not a {kind} ({shown} ...); "
                              f"choose an empty or new {flag}")
        _check_writable(p, flag)
        return p
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{flag} {p}: cannot be created ({ancestor} is not a directory)")
    _check_writable(ancestor, flag, p)
    return p


def _check_writable(directory: Path, flag: str, target: Path | None = None) -> None:
    """Probe that a file can be created in `directory` (permissions, read-only mounts)."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        what = f"{target} cannot be created in {directory}" if target else f"{directory} is not writable"
        raise OutputError(f"{flag} {what}: {e.strerror or e}") from None
