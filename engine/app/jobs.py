"""Background jobs: `python -m engine …` subprocesses with their own log, pid and status file.

JOBS/<id>/job.json   {"id", "kind", "argv", "pid", "started", "status", "returncode", "ended", "watch"}
JOBS/<id>/log.txt    stdout + stderr of the process
JOBS/<id>/exit_code  written by `python -m engine` itself on exit ($DIFFSEG_EXIT_FILE); absent = killed
A job is a detached process (its own session), so it outlives the program that started it (a page
reload, a restarted server); its state is re-read from disk and the pid on every poll. Stop = SIGTERM
(pretrain checkpoints and exits 130 on it).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic

JOB_FILE, LOG_FILE, EXIT_FILE = "job.json", "log.txt", "exit_code"
ACTIVE = ("running", "stopping")


def start_job(jobs_dir: str | Path, kind: str, args: list[str], cwd: str | Path | None = None,
              watch: str | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Start `python -m engine <args>` detached; `watch` is an optional path to show progress from (a run dir)."""
    jobs_dir = Path(jobs_dir)
    job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    d = jobs_dir / job_id
    d.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "engine", *args]
    log = open(d / LOG_FILE, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(cwd) if cwd else None, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {}),
                                     "DIFFSEG_EXIT_FILE": str(d / EXIT_FILE)})
    finally:
        log.close()
    job = {"id": job_id, "kind": kind, "argv": argv, "pid": proc.pid, "started": time.time(),
           "status": "running", "returncode": None, "ended": None, "watch": watch}
    write_json_atomic(d / JOB_FILE, job)
    _children[proc.pid] = proc
    return job


# Popen objects of jobs started by this process (so their exit codes are collected, no zombies).
_children: dict[int, subprocess.Popen] = {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def refresh(jobs_dir: str | Path, job: dict[str, Any]) -> dict[str, Any]:
    """Update a job's status from its process (exit code when this process started it)."""
    if job["status"] not in ACTIVE:
        return job
    pid, rc = job["pid"], None
    proc = _children.get(pid)
    if proc is not None:
        rc = proc.poll()
        if rc is None:
            return job
    elif _alive(pid):
        return job
    if rc is None:
        rc = _returncode_from_file(Path(jobs_dir) / job["id"] / EXIT_FILE)
    job = {**job, "returncode": rc, "ended": time.time(),
           "status": "stopped" if job["status"] == "stopping" or rc in (130, -15) else
           ("done" if rc == 0 else "failed")}
    write_json_atomic(Path(jobs_dir) / job["id"] / JOB_FILE, job)
    _children.pop(pid, None)
    return job


def _returncode_from_file(path: Path) -> int:
    """Exit code a job wrote on exit (its parent is gone, so no wait()); -9 when it died without writing one."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return -9


def list_jobs(jobs_dir: str | Path) -> list[dict[str, Any]]:
    """All jobs, newest first, with refreshed status."""
    jobs_dir = Path(jobs_dir)
    out: list[dict[str, Any]] = []
    if not jobs_dir.is_dir():
        return out
    for d in sorted(jobs_dir.iterdir(), reverse=True):
        f = d / JOB_FILE
        if f.is_file():
            try:
                out.append(refresh(jobs_dir, json.loads(f.read_text())))
            except (json.JSONDecodeError, KeyError, OSError):
                continue
    return out


def get_job(jobs_dir: str | Path, job_id: str) -> dict[str, Any]:
    return refresh(jobs_dir, json.loads((Path(jobs_dir) / job_id / JOB_FILE).read_text()))


def stop_job(jobs_dir: str | Path, job_id: str) -> dict[str, Any]:
    """Send SIGTERM to the job's process group and mark it as stopping."""
    job = get_job(jobs_dir, job_id)
    if job["status"] != "running":
        return job
    try:
        os.killpg(job["pid"], signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(job["pid"], signal.SIGTERM)
    job = {**job, "status": "stopping"}
    write_json_atomic(Path(jobs_dir) / job_id / JOB_FILE, job)
    return job


def read_log(path: str | Path, max_chars: int = 4000) -> str:
    """The last `max_chars` of a log (carriage-return progress lines collapsed to their last state)."""
    path = Path(path)
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - max_chars * 4))
        text = f.read().decode("utf-8", "replace")
    lines = [ln.split("\r")[-1] if ln.split("\r")[-1].strip() else ln.strip("\r") for ln in text.split("\n")]
    return "\n".join(lines)[-max_chars:]


def job_log(jobs_dir: str | Path, job_id: str, max_chars: int = 4000) -> str:
    """The end of a job's log, cleaned for reading (clean_log)."""
    return clean_log(read_log(Path(jobs_dir) / job_id / LOG_FILE, max_chars * 4))[-max_chars:]


# ---- one job per output folder, a readable log, durations -----------------------------------------
OUTPUT_FLAGS = ("--out", "--json")


class JobConflict(ValueError):
    """A job would write where a running job writes (message names both)."""


def job_outputs(argv: list[str]) -> list[Path]:
    """The output paths a job's command line names (values of --out / --json), resolved."""
    return [Path(argv[i + 1]).expanduser().resolve() for i, a in enumerate(argv[:-1]) if a in OUTPUT_FLAGS]


def _overlap(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def output_in_use(jobs_dir: str | Path, outputs: list[str | Path]) -> dict[str, Any] | None:
    """The running job that writes into (or above, or below) one of `outputs`, or None."""
    wanted = [Path(o).expanduser().resolve() for o in outputs]
    for job in list_jobs(jobs_dir):
        if job["status"] not in ACTIVE:
            continue
        if any(_overlap(w, o) for w in wanted for o in job_outputs(job["argv"])):
            return job
    return None


def start_exclusive(jobs_dir: str | Path, kind: str, args: list[str], cwd: str | Path | None = None,
                    watch: str | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """start_job, refused (JobConflict) when a running job already writes to one of this job's outputs: a job
    of this registry (checked here, before it starts) or any process holding the output's lock
    (engine.output_lock, which the engine commands take themselves)."""
    from ..output_lock import is_locked

    outputs = job_outputs(args)
    busy = output_in_use(jobs_dir, [str(p) for p in outputs])  # first: it names the job to stop
    if busy is not None:
        outs = ", ".join(str(p) for p in job_outputs(busy["argv"]))
        raise JobConflict(f"refused: {kind} job would write to {outs}, which running {busy['kind']} job "
                          f"{busy['id']} is writing; stop it or choose another output")
    for out in outputs:
        pid = is_locked(out)
        if pid is not None:
            raise JobConflict(f"refused: {kind} job would write to {out}, which another process "
                              f"({'pid ' + str(pid) if pid else 'pid unknown'}) is writing; wait for it or choose "
                              "another output")
    return start_job(jobs_dir, kind, args, cwd, watch, env)


_PROGRESS_LINE = re.compile(r"^\[\d+/\d+\]|^\s*\d+%\|")


def clean_log(text: str) -> str:
    """A log for people: carriage-return progress collapsed to its last state, padding stripped, and each run
    of consecutive progress lines ('[k/n] …', tqdm bars) reduced to its last line, so INFO lines stay visible."""
    out: list[str] = []
    for raw in text.split("\n"):
        parts = [p for p in raw.split("\r") if p.strip()]
        line = (parts[-1] if parts else "").rstrip()
        if not line:
            continue
        if out and _PROGRESS_LINE.match(line) and _PROGRESS_LINE.match(out[-1]):
            out[-1] = line
        else:
            out.append(line)
    return "\n".join(out)


def duration(job: dict[str, Any], now: float | None = None) -> float:
    """Seconds a job ran (so far, while it runs)."""
    end = job.get("ended") or (now if now is not None else time.time())
    return max(0.0, float(end) - float(job["started"]))


def format_duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '2 h 01 min'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
