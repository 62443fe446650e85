"""Background jobs (the Train page's engine): run, progress, stop, survive the starter going away, exit codes."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from engine.app import jobs
from engine.app.workspace import read_loss, read_progress
from helpers import REPO, subprocess_env


def wait_for(cond, timeout: float = 120, what: str = "condition"):  # noqa: ANN001, ANN201
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def start_pretrain(jobs_dir: Path, data: Path, run: Path, steps: int, *extra: str) -> dict:
    return jobs.start_job(jobs_dir, "pretrain", ["pretrain", "--data", str(data), "--preset", "tiny", "--out", str(run),
                                                 "--max-steps", str(steps), "--save-every", "2", "--log-every", "1",
                                                 "--sample-every", "0", "--no-progress", *extra],
                          cwd=REPO, watch=str(run), env=subprocess_env())


def test_stop_then_resume_after_the_starter_forgot_the_job(tiny_data: Path, tmp_path: Path) -> None:
    jobs_dir, run = tmp_path / "jobs", tmp_path / "run"
    job = start_pretrain(jobs_dir, tiny_data, run, 100_000)
    assert job["status"] == "running" and (jobs_dir / job["id"] / "job.json").is_file()
    wait_for(lambda: (read_progress(run) or {}).get("step", 0) >= 3, what="3 training steps")
    assert jobs.get_job(jobs_dir, job["id"])["status"] == "running"
    jobs.stop_job(jobs_dir, job["id"])
    done = wait_for(lambda: (j := jobs.get_job(jobs_dir, job["id"]))["status"] not in jobs.ACTIVE and j,
                    what="the job to stop")
    assert done["status"] == "stopped" and done["returncode"] == 130, done
    assert (run / "checkpoint.pt").is_file() or any(run.glob("*.pt")), sorted(p.name for p in run.iterdir())
    stopped_at = read_progress(run)["step"]
    assert jobs.job_log(jobs_dir, job["id"]).strip(), "the log is kept"

    # A reload / restarted dashboard: no Popen handles, state comes from disk only.
    jobs._children.clear()
    listed = jobs.list_jobs(jobs_dir)
    assert [(j["id"], j["status"], j["returncode"]) for j in listed] == [(job["id"], "stopped", 130)]

    again = start_pretrain(jobs_dir, tiny_data, run, stopped_at + 2, "--resume")
    jobs._children.clear()  # finish without a parent handle: the exit code comes from the exit file
    finished = wait_for(lambda: (j := jobs.get_job(jobs_dir, again["id"]))["status"] not in jobs.ACTIVE and j,
                        what="the resumed job to finish")
    assert finished["status"] == "done" and finished["returncode"] == 0, jobs.job_log(jobs_dir, again["id"])
    steps = [r["step"] for r in read_loss(run)]
    assert steps == list(range(steps[0], steps[0] + len(steps))), steps  # continuous across stop + resume
    assert steps[-1] in (stopped_at + 1, stopped_at + 2), (stopped_at, steps)
    assert [j["id"] for j in jobs.list_jobs(jobs_dir)] == [again["id"], job["id"]]  # newest first


def test_failing_job_reports_its_exit_code_and_error(tmp_path: Path) -> None:
    job = jobs.start_job(tmp_path / "jobs", "fit", ["fit", "--run", str(tmp_path / "no_run"), "--data",
                                                     str(tmp_path / "no_data"), "--out", str(tmp_path / "clf")],
                         cwd=REPO, env=subprocess_env())
    jobs._children.clear()
    end = wait_for(lambda: (j := jobs.get_job(tmp_path / "jobs", job["id"]))["status"] not in jobs.ACTIVE and j,
                   what="the failing job")
    assert end["status"] == "failed" and end["returncode"] == 2, end
    assert "error:" in jobs.job_log(tmp_path / "jobs", job["id"])


def test_killed_job_without_a_parent_is_failed(tiny_data: Path, tmp_path: Path) -> None:
    jobs_dir, run = tmp_path / "jobs", tmp_path / "run"
    job = start_pretrain(jobs_dir, tiny_data, run, 100_000)
    wait_for(lambda: (read_progress(run) or {}).get("step", 0) >= 1, what="a training step")
    proc = jobs._children.pop(job["pid"])
    os.killpg(job["pid"], signal.SIGKILL)
    proc.wait(30)  # reap it here; the job record only sees a dead pid and no exit file
    end = jobs.get_job(jobs_dir, job["id"])
    assert end["status"] == "failed" and end["returncode"] == -9, end


@pytest.mark.parametrize("code", [0, 3])
def test_exit_file_written_by_the_entry_point(tmp_path: Path, code: int) -> None:
    import subprocess
    import sys

    exit_file = tmp_path / "exit_code"
    args = ["--help"] if code == 0 else ["fit", "--run", "x", "--data", "y", "--out", "z", "--steps", "-1"]
    r = subprocess.run([sys.executable, "-m", "engine", *args], cwd=REPO, capture_output=True, text=True,
                       env={**subprocess_env(), "DIFFSEG_EXIT_FILE": str(exit_file)}, timeout=120)
    assert int(exit_file.read_text()) == r.returncode
    assert (r.returncode == 0) == (code == 0)
