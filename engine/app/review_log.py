"""The clinician's review log: accept / reject / needs-correction per frame, with a note, kept on disk.

WORKSPACE_OUT/review/review_log.csv, one row per frame (the latest decision wins; earlier ones are kept in
the `history` count), written atomically so a crash never leaves half a log. The Segment page writes it;
anyone can open the CSV in a spreadsheet.
"""
from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import write_text_atomic
from ..safe_names import csv_cell
from ..errors import UserError

DECISIONS = ("accept", "reject", "needs correction")
FIELDS = ("frame", "decision", "note", "reviewer", "classifier", "uncertainty", "time", "history")
LOG_NAME = "review_log.csv"


@dataclass
class ReviewEntry:
    """One frame's current review decision."""

    frame: str
    decision: str
    note: str = ""
    reviewer: str = ""
    classifier: str = ""
    uncertainty: str = ""
    time: str = ""
    history: int = 1


def log_path(out_dir: str | Path) -> Path:
    """Where a workspace's review log lives."""
    return Path(out_dir) / "review" / LOG_NAME


def read_log(path: str | Path) -> dict[str, ReviewEntry]:
    """frame → entry; {} when the log does not exist yet. Malformed rows are refused with the file and line."""
    path = Path(path)
    if not path.is_file():
        return {}
    out: dict[str, ReviewEntry] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "frame" not in reader.fieldnames or "decision" not in reader.fieldnames:
            raise UserError(f"{path}: not a review log (needs the columns frame, decision)")
        for line, row in enumerate(reader, start=2):
            if row.get("decision") not in DECISIONS:
                raise UserError(f"{path}:{line}: decision {row.get('decision')!r} is not one of {', '.join(DECISIONS)}")
            out[row["frame"]] = ReviewEntry(row["frame"], row["decision"], row.get("note") or "",
                                            row.get("reviewer") or "", row.get("classifier") or "",
                                            row.get("uncertainty") or "", row.get("time") or "",
                                            int(row.get("history") or 1))
    return out


def to_csv(entries: dict[str, ReviewEntry]) -> str:
    """The log as CSV text (frames sorted), the bytes a download gives."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for frame in sorted(entries):  # cells a spreadsheet would run as a formula are neutralised
        writer.writerow({k: csv_cell(v) for k, v in asdict(entries[frame]).items()})
    return buf.getvalue()


def record(path: str | Path, frame: str, decision: str, note: str = "", reviewer: str = "", classifier: str = "",
           uncertainty: float | None = None, now: float | None = None) -> ReviewEntry:
    """Set a frame's decision (replacing its previous one) and rewrite the log atomically."""
    if decision not in DECISIONS:
        raise UserError(f"decision {decision!r} is not one of {', '.join(DECISIONS)}")
    if not frame:
        raise UserError("a review needs a frame name")
    entries = read_log(path)
    previous = entries.get(frame)
    entry = ReviewEntry(frame, decision, note.strip(), reviewer.strip(), classifier,
                        "" if uncertainty is None else f"{uncertainty:.5f}",
                        time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now if now is not None else time.time())),
                        (previous.history + 1) if previous else 1)
    entries[frame] = entry
    write_text_atomic(path, to_csv(entries))
    return entry
