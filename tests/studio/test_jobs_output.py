"""Jobs: a second job into a folder a running job writes is refused; logs are cleaned; durations."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine.app import jobs
from engine.atomic import write_json_atomic


def _fake_running(jobs_dir: Path, job_id: str, argv: list[str], pid: int) -> None:
    write_json_atomic(jobs_dir / job_id / jobs.JOB_FILE, {
        "id": job_id, "kind": "pretrain", "argv": [sys.executable, "-m", "engine", *argv], "pid": pid,
        "started": 100.0, "status": "running", "returncode": None, "ended": None, "watch": None})


def test_output_in_use_by_a_running_job_is_refused(tmp_path: Path) -> None:
    import os

    jobs_dir, out = tmp_path / "jobs", tmp_path / "run"
    _fake_running(jobs_dir, "20260101-000000-aaaaaa", ["pretrain", "--data", "d", "--out", str(out)], os.getpid())
    assert jobs.output_in_use(jobs_dir, [out])["id"] == "20260101-000000-aaaaaa"
    assert jobs.output_in_use(jobs_dir, [out / "sub"]) is not None  # nested either way
    assert jobs.output_in_use(jobs_dir, [tmp_path / "other"]) is None
    with pytest.raises(jobs.JobConflict, match=r"refused: pretrain job would write to .*run, which running "
                                               r"pretrain job 20260101-000000-aaaaaa is writing"):
        jobs.start_exclusive(jobs_dir, "pretrain", ["pretrain", "--data", "d", "--out", str(out)])
    assert len(jobs.list_jobs(jobs_dir)) == 1  # nothing was started


def test_clean_log_and_durations() -> None:
    raw = ("[1/20] features 1/20".ljust(70) + "\r[2/20] features 2/20".ljust(70) + "\n"
           "INFO engine: epoch 1: mean val loss 0.2\n[3/20] epoch 1\n[20/20] done".ljust(70) + "\n\nINFO engine: sampling\n"
           "  3%|▎  | 1/30 [00:01<00:30]\r 100%|██| 30/30 [00:30<00:00]\nINFO engine: saved\n")
    assert jobs.clean_log(raw).split("\n") == [
        "[2/20] features 2/20", "INFO engine: epoch 1: mean val loss 0.2", "[20/20] done", "INFO engine: sampling",
        " 100%|██| 30/30 [00:30<00:00]", "INFO engine: saved"]
    assert jobs.duration({"started": 10.0, "ended": 75.0}) == 65.0
    assert jobs.duration({"started": 10.0, "ended": None}, now=12.5) == 2.5
    assert [jobs.format_duration(s) for s in (42, 185, 7260)] == ["42 s", "3 min 05 s", "2 h 01 min"]


def test_an_output_locked_by_another_writer_is_refused(tmp_path: Path) -> None:
    from engine.output_lock import OutputLock

    out = tmp_path / "run"
    with OutputLock(out):  # what a `pretrain` started outside the dashboard holds
        with pytest.raises(jobs.JobConflict, match=r"refused: fit job would write to .*run, which another process "
                                                   r"\(pid \d+\) is writing"):
            jobs.start_exclusive(tmp_path / "jobs", "fit", ["fit", "--run", "r", "--data", "d", "--out", str(out)])
    assert jobs.list_jobs(tmp_path / "jobs") == []
