"""Train: pretraining / fitting / sweep / compare as background jobs (engine CLI subprocesses)."""
from __future__ import annotations

import time
from typing import Literal

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import state
from engine import jobs, workspace as wsmod
from engine.features import DEFAULT_STEPS
from engine.methods.base import default_methods
from engine.models.config import PRESETS
from engine.training.pools import POOLS

ws = state.workspace()
st.title("Train")
st.caption("Jobs run as `python -m engine …` subprocesses, outside this page: they keep running when you reload "
           f"or close the browser; logs are kept under `{ws.jobs_dir}`.")
results = ws.out_dir / "results"
stamp = time.strftime("%Y%m%d-%H%M%S")

kind = st.radio("New job", ["pretrain", "fit", "sweep", "compare"], horizontal=True, key="train_kind")
with st.form("job_form"):
    data = st.text_input("Data set directory", value=str(ws.data or ""), key="job_data")
    if kind == "pretrain":
        c1, c2, c3 = st.columns(3)
        preset = c1.selectbox("Preset", list(PRESETS), key="job_preset")
        max_steps = c2.number_input("Max steps", 1, 1_000_000, 200, key="job_steps")
        out = c3.text_input("Run directory", value=str(ws.out_dir / "runs" / f"run-{stamp}"), key="job_out")
        has_pool = bool(ws.data and state.load_dataset(ws).stems("unlabeled"))
        pool = st.selectbox("Pool", list(POOLS), index=0 if has_pool else list(POOLS).index("train"), key="job_pool",
                            help="Images to pretrain on (masks are never used, test frames never are). The "
                                 "embedded demo data ships without unlabelled frames; `python -m engine data synth` "
                                 "writes 1000.")
        resume = st.checkbox("Resume the run in this directory", key="job_resume")
        args = ["pretrain", "--data", data, "--preset", preset, "--out", out, "--max-steps", str(int(max_steps)),
                "--pool", pool, "--no-progress"] + (["--resume"] if resume else [])
        watch = out
    else:
        run = st.text_input("Run directory", value=str(ws.run or ""), key="job_run")
        if kind == "fit":
            c1, c2, c3 = st.columns(3)
            steps = c1.text_input("Timesteps", ",".join(map(str, DEFAULT_STEPS)), key="job_fit_steps")
            blocks = c2.text_input("Blocks (empty = default)", "", key="job_fit_blocks")
            out = c3.text_input("Classifier directory", value=str(ws.out_dir / "classifiers" / f"clf-{stamp}"),
                                key="job_fit_out")
            args = ["fit", "--run", run, "--data", data, "--steps", steps, "--out", out] + \
                (["--blocks", blocks] if blocks.strip() else [])
        elif kind == "sweep":
            steps = st.text_input("Timesteps", "20,50,150,250", key="job_sweep_steps")
            out = str(results / f"sweep-{stamp}.json")
            args = ["sweep", "--run", run, "--data", data, "--steps", steps, "--json", out]
        else:
            methods = st.text_input("Methods", ",".join(default_methods()), key="job_methods")
            out = str(results / f"compare-{stamp}.json")
            args = ["compare", "--data", data, "--run", run, "--methods", methods, "--json", out]
        watch = ""
    submitted = st.form_submit_button(f"Start {kind}", type="primary")
if submitted:
    results.mkdir(parents=True, exist_ok=True)
    job = jobs.start_job(ws.jobs_dir, kind, args, cwd=wsmod.REPO_ROOT, watch=watch)
    st.toast(f"Started {kind} job {job['id']}")


@st.fragment(run_every="2s")
def job_panel() -> None:
    all_jobs = jobs.list_jobs(ws.jobs_dir)
    if not all_jobs:
        st.info("No jobs yet.")
        return
    st.subheader("Jobs")
    st.dataframe(pd.DataFrame([{"id": j["id"], "kind": j["kind"], "status": j["status"],
                                "started": time.strftime("%H:%M:%S", time.localtime(j["started"])),
                                "exit": j["returncode"]} for j in all_jobs]),
                 hide_index=True, width="stretch")
    ids = [j["id"] for j in all_jobs]
    pick = st.selectbox("Job", ids, key="train_job_pick")
    job = next(j for j in all_jobs if j["id"] == pick)
    state_name: Literal["running", "complete", "error"] = {
        "running": "running", "stopping": "running", "done": "complete"}.get(job["status"], "error")  # type: ignore[assignment]
    with st.status(f"{job['kind']} · {job['status']}", state=state_name, expanded=True):
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


job_panel()
