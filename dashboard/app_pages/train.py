"""Train: pretraining / fitting / sweep / compare as background jobs (engine CLI subprocesses).

No form: Enter in a field only commits the value; a job starts on the Start button alone, and a job whose
output folder a running job writes is refused (engine.app.jobs.start_exclusive). Every typed path is confined
to the allowed folders (engine.app.access); in public/demo mode the page is off.
"""
from __future__ import annotations

import time
from typing import Literal

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import state
from engine.app import access, jobs, workspace as wsmod
from engine.segmentation.features import DEFAULT_STEPS
from engine.methods.base import default_methods
from engine.models.config import PRESETS
from engine.training.pools import POOLS

ws = state.workspace()
pol = state.policy()
st.title("Train")
if pol.public:
    st.info("Jobs are off in public/demo mode (DIFFSEG_PUBLIC): this server only segments uploads with the embedded "
            "default. Run DiffSeg Studio on your own machine to pretrain and fit.", icon=":material/public:")
    st.stop()
st.caption("Jobs run as `python -m engine …` subprocesses, outside this page: they keep running when you reload "
           f"or close the browser; logs are kept under `{ws.jobs_dir}`. Outputs must lie inside `{pol.root}`.")
results = ws.out_dir / "results"
if "train_stamp" not in st.session_state:
    st.session_state["train_stamp"] = time.strftime("%Y%m%d-%H%M%S")
stamp = st.session_state["train_stamp"]

kind = st.radio("New job", ["pretrain", "fit", "sweep", "compare"], horizontal=True, key="train_kind")
with st.container(border=True):
    data = st.text_input("Data set directory", value=str(ws.data or ""), key="job_data")
    if kind == "pretrain":
        c1, c2 = st.columns(2)
        preset = c1.selectbox("Preset", list(PRESETS), key="job_preset")
        max_steps = c2.number_input("Max steps", 1, 1_000_000, 200, key="job_steps")
        out = st.text_input("Run directory (output)", value=str(ws.out_dir / "runs" / f"run-{stamp}"), key="job_out")
        has_pool = bool(ws.data and state.load_dataset(ws).stems("unlabeled"))
        pool = st.selectbox("Pool", list(POOLS), index=0 if has_pool else list(POOLS).index("train"), key="job_pool",
                            help="Images to pretrain on (masks are never used, test frames never are). The "
                                 "embedded demo data ships without unlabelled frames; `python -m engine data synth` "
                                 "writes 1000.")
        resume = st.checkbox("Resume the run in this directory", key="job_resume")
        paths = {"Data set directory": (data, False), "Run directory": (out, True)}
        build = lambda p: ["pretrain", "--data", p["Data set directory"], "--preset", preset, "--out",  # noqa: E731
                           p["Run directory"], "--max-steps", str(int(max_steps)), "--pool", pool, "--no-progress"] \
            + (["--resume"] if resume else [])
        watch_key = "Run directory"
    else:
        run = st.text_input("Run directory", value=str(ws.run or ""), key="job_run")
        watch_key = ""  # no directory to watch
        if kind == "fit":
            c1, c2 = st.columns(2)
            steps = c1.text_input("Timesteps", ",".join(map(str, DEFAULT_STEPS)), key="job_fit_steps")
            blocks = c2.text_input("Blocks (empty = the run's default)", "", key="job_fit_blocks")
            out = st.text_input("Classifier directory (output)", value=str(ws.out_dir / "classifiers" / f"clf-{stamp}"),
                                key="job_fit_out")
            paths = {"Run directory": (run, False), "Data set directory": (data, False),
                     "Classifier directory": (out, True)}
            build = lambda p: ["fit", "--run", p["Run directory"], "--data", p["Data set directory"],  # noqa: E731
                               "--steps", steps, "--out", p["Classifier directory"]] + \
                (["--blocks", blocks] if blocks.strip() else [])
        elif kind == "sweep":
            steps = st.text_input("Timesteps", "20,50,150,250", key="job_sweep_steps")
            out = str(results / f"sweep-{stamp}.json")
            paths = {"Run directory": (run, False), "Data set directory": (data, False), "Sweep JSON": (out, True)}
            build = lambda p: ["sweep", "--run", p["Run directory"], "--data", p["Data set directory"],  # noqa: E731
                               "--steps", steps, "--json", p["Sweep JSON"]]
        else:
            methods = st.text_input("Methods", ",".join(default_methods()), key="job_methods")
            out = str(results / f"compare-{stamp}.json")
            paths = {"Run directory": (run, False), "Data set directory": (data, False), "Compare JSON": (out, True)}
            build = lambda p: ["compare", "--data", p["Data set directory"], "--run", p["Run directory"],  # noqa: E731
                               "--methods", methods, "--json", p["Compare JSON"]]
    submitted = st.button(f"Start {kind}", type="primary", key="job_start")

if submitted:
    try:
        checked = {label: str(pol.check(value, label, write=write)) for label, (value, write) in paths.items()}
        results.mkdir(parents=True, exist_ok=True)
        job = jobs.start_exclusive(ws.jobs_dir, kind, build(checked), cwd=wsmod.REPO_ROOT,
                                   watch=checked[watch_key] if watch_key else None)
        st.session_state.pop("train_stamp", None)  # the next job gets fresh default output names
        st.success(f"Started {kind} job `{job['id']}`.", icon=":material/play_arrow:")
    except (access.PathRefused, jobs.JobConflict) as e:
        st.error(str(e), icon=":material/block:")


def _use(job: dict) -> None:
    """Put a finished job's output into the sidebar workspace (applied on the next run)."""
    out = [str(p) for p in jobs.job_outputs(job["argv"])]
    if job["kind"] == "pretrain" and out:
        state.use_workspace(run=out[0])
    elif job["kind"] == "fit" and out:
        argv = job["argv"]
        state.use_workspace(run=argv[argv.index("--run") + 1], classifier=out[0])


@st.fragment(run_every="2s")
def job_panel() -> None:
    all_jobs = jobs.list_jobs(ws.jobs_dir)
    if not all_jobs:
        st.info("No jobs yet.")
        return
    st.subheader("Jobs")
    now = time.time()
    st.dataframe(pd.DataFrame([{"id": j["id"], "kind": j["kind"], "status": j["status"],
                                "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j["started"])),
                                "duration": jobs.format_duration(jobs.duration(j, now)),
                                "output": ", ".join(p.name for p in jobs.job_outputs(j["argv"])) or "–",
                                "exit": "–" if j["returncode"] is None else str(j["returncode"])} for j in all_jobs]),
                 hide_index=True, width="stretch", key="train_jobs_table")
    ids = [j["id"] for j in all_jobs]
    pick = st.selectbox("Job", ids, key="train_job_pick")
    job = next(j for j in all_jobs if j["id"] == pick)
    state_name: Literal["running", "complete", "error"] = {  # type: ignore[assignment]
        "running": "running", "stopping": "running", "done": "complete"}.get(job["status"], "error")
    with st.status(f"{job['kind']} · {job['status']} · {jobs.format_duration(jobs.duration(job, now))}",
                   state=state_name, expanded=True):
        st.code(" ".join(job["argv"][1:]), language="bash")
        if job["kind"] == "pretrain" and job.get("watch"):
            prog = wsmod.read_progress(job["watch"])
            if prog and prog.get("max_steps"):
                st.progress(min(prog["step"] / prog["max_steps"], 1.0),
                            text=f"step {prog['step']}/{prog['max_steps']} · loss {prog.get('loss', 0):.4f}")
            loss = pd.DataFrame(wsmod.read_loss(job["watch"]))
            if len(loss):
                fig = px.line(loss, x="step", y="loss", log_y=True, title="Loss")
                fig.update_layout(height=260, margin={"t": 40, "b": 10})
                st.plotly_chart(fig, width="stretch", key=f"loss_{pick}")
        st.code(jobs.job_log(ws.jobs_dir, pick, 3000) or "(no output yet)", language="text")
        if job["status"] == "running" and st.button("Stop", key=f"stop_{pick}"):
            jobs.stop_job(ws.jobs_dir, pick)
            st.toast("Stop requested (SIGTERM); pretraining saves a checkpoint first.")
        if job["status"] == "done" and job["kind"] in ("pretrain", "fit"):
            what = "run" if job["kind"] == "pretrain" else "classifier"
            if st.button(f"Use this {what}", key=f"use_{pick}", type="primary", icon=":material/input:",
                         help="Puts it into the sidebar workspace (Directories on disk)"):
                _use(job)
                st.rerun(scope="app")


job_panel()
