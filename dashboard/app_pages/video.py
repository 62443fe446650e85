"""Video: segment a surgery clip as a background job, play the overlay, explore the timeline frame by frame."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from dashboard import state
from engine.app import jobs
from engine.app import workspace as wsmod
from engine.outputs.render import heatmap, overlay
from engine.video import results as vres
from engine.video.reader import VideoError

ws = state.workspace()
st.title("Video")
st.caption("Segment a whole clip: every (N-th) frame goes through the diffusion features and the pixel classifier "
           "in batches, as a background `python -m engine segment-video` job (it keeps running if you reload). "
           f"Limits: {vres.MAX_UPLOAD_MB} MB per upload, {vres.MAX_SECONDS / 60:.0f} minutes per clip, "
           "40 megapixels per frame; types " + ", ".join(vres.VIDEO_TYPES) + ". Longer clips: use the CLI.")
if not state.need(ws, "classifier"):
    st.stop()
clf = state.load_classifier(ws)
video_dir = ws.out_dir / "videos"
demo = (ws.root / "demo_video" / "demo_clip.mp4") if ws.root else None

src_col, opt_col = st.columns([3, 2])
with src_col:
    up = st.file_uploader("Upload a clip", type=vres.VIDEO_TYPES, key="video_upload")
    use_demo = demo is not None and demo.is_file() and st.toggle(
        "Otherwise use the bundled demo clip (6 s synthetic surgery, 640×480, exact labels)", value=True,
        key="video_demo")
with opt_col:
    every = st.number_input("Segment every N-th frame", 1, 100, 1, key="video_every")
    smooth = st.number_input("Temporal smoothing (± frames)", 0, 10, 0, key="video_smooth",
                             help="Average class probabilities over a centred window of processed frames: "
                                  "less flicker, slightly later reaction to fast motion.")
    contours = st.toggle("Overlay as contours", value=False, key="video_contours")
    unfamiliar = st.toggle("Unfamiliar-input score per frame (slower)", value=False, key="video_unfamiliar",
                           help="Scores each frame against the run's familiarity model: extra diffusion passes.")
    views = 2 if clf.fit_config.flip_tta else 1
    plans = {"full": clf.spec.n_noise * views, "balanced": views, "fast": 1}  # UNet passes per frame
    offered = [m for m in plans if m == "full" or plans[m] < plans["full"] and
               (m == "fast" or plans[m] > 1)]  # modes that differ from each other for this classifier
    labels = {"full": f"Full recipe ({plans['full']} diffusion passes per frame)",
              "balanced": f"Balanced: 1 noise draw + mirrored frame ({plans['balanced']} passes)",
              "fast": "Fast: 1 diffusion pass per frame"}
    passes = st.radio(
        "Speed", offered, format_func=labels.__getitem__, key="video_passes", horizontal=False,
        help=f"The classifier's recipe averages {clf.spec.n_noise} noise draw(s)"
             f"{' and the mirrored frame' if views == 2 else ''}."
             + (" Balanced keeps the mirrored frame but one noise draw (README: video speed measures what it "
                "changes on the demo clip)." if "balanced" in offered else "")
             + " Fast uses one diffusion pass. Same ensemble in every mode.") if len(offered) > 1 else "full"
    total_members = clf.model.members
    members = st.select_slider(
        "Ensemble members used", list(range(1, total_members + 1)), value=total_members, key="video_members",
        help=f"The classifier is an ensemble of {total_members} pixel heads. Using the first few is faster (the "
             "head's time is linear in members) with labels close to the whole ensemble's; the uncertainty map "
             "and review score then come from those members only (README: video speed).") \
        if total_members > 1 else 1
    threshold = st.slider("Review if uncertainty score above", 0.0, 1.5,
                          round(vres.default_review_threshold(clf), 3), 0.005, key="video_threshold",
                          help="Default: the classifier's calibrated threshold (about 10 % of typical frames are "
                               "flagged), or 0.6 without a calibration.")


def _source() -> tuple[Path, str] | None:
    """The clip to segment on disk (uploads are written once, by content hash) and its display name."""
    if up is not None:
        data = up.getvalue()
        digest = hashlib.sha256(data).hexdigest()[:16]
        path = video_dir / "uploads" / digest / Path(up.name).name
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return path, up.name
    if use_demo and demo is not None:
        return demo, demo.name
    return None


src = _source()
if src is not None:
    try:
        info = vres.check_upload(src[0], src[0].stat().st_size)
        st.caption(f"`{src[1]}`: {info.width}×{info.height}, {info.fps:.2f} frames/s, {info.duration:.1f} s, "
                   f"{info.codec}{', variable frame rate' if info.variable_rate else ''}"
                   f"{f', rotated {info.rotation}°' if info.rotation else ''}")
        if st.button("Segment the clip", type="primary", key="video_start"):
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = video_dir / "results" / f"{Path(src[1]).stem}-{stamp}"
            args = ["segment-video", str(src[0].resolve()), "--classifier", str(ws.classifier), "--out", str(out),
                    "--every", str(int(every)), "--smooth", str(int(smooth)), "--review-threshold", str(threshold),
                    "--no-progress"] + (["--contours"] if contours else []) + (["--unfamiliar"] if unfamiliar else [])
            args += ["--passes", str(passes)]
            if int(members) < total_members:
                args += ["--members", str(int(members))]
            truth = vres.demo_labels(src[0], demo)  # the demo clip (bundled or uploaded) is scored against its labels
            if truth is not None:
                args += ["--truth", str(truth)]
            started = jobs.start_job(ws.jobs_dir, "video", args, cwd=wsmod.REPO_ROOT, watch=str(out))
            st.session_state["video_job"] = started["id"]
            st.rerun()  # start polling
    except VideoError as e:
        st.error(str(e))


def _current_job() -> dict | None:
    """This session's job, else the newest video job on disk (so a reload finds it again)."""
    all_jobs = [j for j in jobs.list_jobs(ws.jobs_dir) if j["kind"] == "video"]
    jid = st.session_state.get("video_job")
    return next((j for j in all_jobs if j["id"] == jid), all_jobs[0] if all_jobs else None)


_first = _current_job()
_polling = _first is not None and _first["status"] in jobs.ACTIVE  # poll only while a job runs


@st.fragment(run_every="1.5s" if _polling else None)
def job_status() -> None:
    job = _current_job()
    if job is None:
        st.info("Choose a clip and press **Segment the clip**.")
        return
    if job["status"] in jobs.ACTIVE:
        prog = vres.progress(job["watch"]) or {}
        done, expected = prog.get("done", 0), prog.get("expected") or 0
        eta = prog.get("eta_s")
        text = (f"{done}/{expected or '?'} frames · {prog.get('fps', 0):.1f} frames/s"
                + (f" · {eta:.0f} s left" if eta is not None else "") if prog else "starting (loading the model)…")
        st.progress(min(done / expected, 1.0) if expected else 0.0, text=text)
        if st.button("Cancel", key="video_cancel"):
            jobs.stop_job(ws.jobs_dir, job["id"])
            st.toast("Cancelling: finished chunks are kept (the CLI's --resume continues them).")
        return
    if _polling:
        st.rerun()  # the job ended while polling: redraw the page (results below, polling off)


job_status()
job = _current_job()
if job is None or job["status"] in jobs.ACTIVE:
    st.stop()
result = vres.load_result(job["watch"])
if result is None:
    st.error(f"The last video job {job['status']} (exit {job['returncode']}):")
    st.code(jobs.job_log(ws.jobs_dir, job["id"], 1500) or "(no output)", language="text")
    st.stop()

s, table = result.summary, result.table
classes = clf.classes
metrics = st.columns(5)
metrics[0].metric("Frames", s["frames"])
metrics[1].metric("Speed", f"{s['fps_this_run'] or 0:.1f} fps",
                  help=(f"Passes: {s.get('passes', 'full')} ({s.get('unet_passes_per_frame', '?')} UNet pass(es) "
                        "per frame)" + (f"; {s['ensemble_members']} of {s['classifier_members']} ensemble members"
                                        if "ensemble_members" in s else "")
                        + (f"; {s['streams']} batch stream(s) × {s['threads_per_stream']} thread(s)"
                           if "streams" in s else "") + ".")
                  if "unet_passes_per_frame" in s else None)
metrics[2].metric("Flicker", f"{100 * (s['flicker'] or 0):.2f} %", help="Share of pixels whose class changes "
                  "between consecutive processed frames (mean).")
metrics[3].metric("Frames to review", s["review_frames"])
if "truth" in s:
    metrics[4].metric("mIoU vs labels", f"{s['truth']['miou']:.3f}")

play_col, frame_col = st.columns([1, 1])
with play_col:
    st.subheader("Overlay")
    st.video(str(result.out / "overlay.mp4"))
    st.markdown(state.legend_html(classes), unsafe_allow_html=True)

fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.05,
                    subplot_titles=("class area (share of frame)", "instrument present", "pupil diameter (px)",
                                    "uncertainty score" + (" · per-frame mIoU" if "miou" in table else "")))
t = table["time_s"]
for c in classes:
    fig.add_trace(go.Scatter(x=t, y=table[f"area_{c.name}"], name=c.name, mode="lines+markers", marker={"size": 4},
                             line={"color": "rgb({},{},{})".format(*c.color)}), row=1, col=1)
if "instrument_present" in table:
    fig.add_trace(go.Scatter(x=t, y=table["instrument_present"].astype(int), name="instrument present",
                             mode="lines+markers", marker={"size": 4}, line={"shape": "hv", "color": "#7b2cbf"},
                             showlegend=False), row=2, col=1)
if "pupil_diameter_px" in table:
    fig.add_trace(go.Scatter(x=t, y=table["pupil_diameter_px"], name="pupil diameter", mode="lines+markers",
                             marker={"size": 4}, line={"color": "#d62728"}, showlegend=False), row=3, col=1)
fig.add_trace(go.Scatter(x=t, y=table["uncertainty"], name="uncertainty", mode="lines+markers", marker={"size": 4},
                         line={"color": "#444"}, showlegend=False), row=4, col=1)
if "unfamiliar_percentile" in table:
    fig.add_trace(go.Scatter(x=t, y=table["unfamiliar_percentile"] / 100, name="unfamiliar (percentile / 100)",
                             mode="lines+markers", marker={"size": 4}, line={"color": "#ff7f0e"}), row=4, col=1)
if "miou" in table:
    fig.add_trace(go.Scatter(x=t, y=table["miou"], name="mIoU vs labels", mode="lines+markers", marker={"size": 4},
                             line={"color": "#2ca02c"}), row=4, col=1)
fig.add_hline(y=s["manifest"]["settings"]["review_threshold"], line_dash="dot", line_color="#d62728", row=4, col=1)
fig.update_xaxes(title_text="time (s)", row=4, col=1)
fig.update_yaxes(range=[-0.15, 1.15], tickvals=[0, 1], ticktext=["no", "yes"], row=2, col=1)
fig.update_layout(height=640, margin={"t": 40, "b": 10, "l": 10, "r": 10}, clickmode="event+select",
                  legend={"orientation": "h", "y": 1.08})
st.subheader("Timeline")
st.caption("Click a point to show that frame with its mask and uncertainty.")
event = st.plotly_chart(fig, width="stretch", key="video_timeline", on_select="rerun", selection_mode="points")

picked = st.session_state.get("video_row", 0)
points: list = dict(event or {}).get("selection", {}).get("points", []) if event else []
if points:
    x = points[0].get("x")
    picked = int((table["time_s"] - float(x)).abs().idxmin()) if x is not None else picked
picked = min(max(int(picked), 0), len(table) - 1)
st.session_state["video_row"] = picked

with frame_col:
    row = table.iloc[picked]
    st.subheader(f"Frame {int(row['frame'])} · {row['time_s']:.2f} s")
    try:
        rgb = vres.frame_rgb(result.video, int(row["frame"]))
        mask, unc = vres.frame_maps(result, picked)
        st.image(overlay(rgb, mask, classes, 0.5, contours=bool(s["manifest"]["settings"]["contours"])),
                 caption="prediction overlay", width="stretch")
        st.image(heatmap(unc, vmax=max(float(unc.max()), 0.01)),
                 caption=f"uncertainty map (ensemble disagreement, 0…{max(float(unc.max()), 0.01):.3f} nats); frame score "
                         f"{row['uncertainty']:.3f}{' · needs review' if row['review'] else ''}", width="stretch")
    except (VideoError, OSError, IndexError) as e:
        st.error(str(e))

st.subheader("Downloads")
dl = st.columns(5)
for col, (name, mime, label) in zip(dl, [("overlay.mp4", "video/mp4", "Overlay"),
                                          ("masks.npz", "application/octet-stream", "Masks"),
                                          ("table.csv", "text/csv", "CSV"),
                                          ("table.parquet", "application/octet-stream", "Parquet"),
                                          ("summary.json", "application/json", "Summary")]):
    col.download_button(label, (result.out / name).read_bytes(), file_name=name, mime=mime, key=f"video_dl_{name}",
                        help=name, width="stretch")
with st.expander("Per-frame table"):
    st.dataframe(table, hide_index=True, width="stretch")
