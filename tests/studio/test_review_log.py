"""The clinician's review log: one row per frame, latest decision wins, CSV round trip, clear refusals."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from engine.app import review_log


def test_record_replace_and_round_trip(tmp_path: Path) -> None:
    path = review_log.log_path(tmp_path)
    assert review_log.read_log(path) == {}
    review_log.record(path, "a.png", "accept", "fine", uncertainty=0.12345678, now=0)
    review_log.record(path, "b.png", "needs correction", "  iris edge too wide ", reviewer="dr x", now=0)
    e = review_log.record(path, "a.png", "reject", "instrument missed", now=0)
    assert e.history == 2
    entries = review_log.read_log(path)
    assert {k: (v.decision, v.note) for k, v in entries.items()} == {
        "a.png": ("reject", "instrument missed"), "b.png": ("needs correction", "iris edge too wide")}
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [r["frame"] for r in rows] == ["a.png", "b.png"] and rows[0]["history"] == "2"
    assert review_log.to_csv(entries) == path.read_text()
    review_log.record(path, "c.png", "reject", "=HYPERLINK(\"http://x\")", now=0)  # a spreadsheet formula
    assert "'=HYPERLINK" in path.read_text() and review_log.read_log(path)["c.png"].note.startswith("'=")


def test_refusals(tmp_path: Path) -> None:
    path = review_log.log_path(tmp_path)
    with pytest.raises(ValueError, match="decision 'maybe' is not one of accept, reject, needs correction"):
        review_log.record(path, "a.png", "maybe")
    assert not path.exists()  # nothing written for a refused decision
    path.parent.mkdir(parents=True)
    path.write_text("frame,decision\na.png,perhaps\n")
    with pytest.raises(ValueError, match=r"review_log.csv:2: decision 'perhaps'"):
        review_log.read_log(path)
    path.write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="not a review log"):
        review_log.read_log(path)
