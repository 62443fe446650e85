"""Label: the suggested frames in order, pre-labelled by the classifier, corrected with brush / eraser / polygon /
fill; Save writes the mask, grows the train split and logs it; Refit fits a new classifier in the background.

UI only: ranking (engine.labelling.suggest), shapes and rasterisation (engine.labelling.annotate), saving
(engine.labelling.label_store) and refitting (engine.labelling.refit via a `python -m engine refit` job) live in
the engine.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from streamlit_drawable_canvas import st_canvas

from dashboard import state
from engine.app import jobs
from engine.app import workspace as wsmod
from engine.labelling.annotate import EditStack, canvas_shapes, render_view, zoom_view
from engine.labelling.label_store import current_user, read_log, save_label
from engine.labelling.refit import REPORT

TOOLS = {"brush": ("Brush", "b", "freedraw"), "eraser": ("Eraser", "e", "freedraw"),
         "polygon": ("Polygon", "p", "polygon"), "fill": ("Fill", "f", "point")}
ss = st.session_state


# ---- cached engine calls ------------------------------------------------------------------------------
def _masks_signature(data: Path) -> tuple:
    """Changes whenever a mask or the split is written (so suggestions are recomputed)."""
    masks = data / "masks"
    names = tuple(sorted(p.name for p in masks.iterdir())) if masks.is_dir() else ()
    split = data / "split.json"
    return names, split.stat().st_mtime if split.exists() else 0.0


@st.cache_resource(max_entries=4, show_spinner="Loading classifier…")
def _classifier(path: str, mtime: float):
    from engine.segmentation.classifier import load_classifier

    clf = load_classifier(path, state.DEVICE, use_cache=False)
    clf.cache = state.feature_cache(clf.run)
    return clf


@st.cache_data(max_entries=16, show_spinner="Ranking unlabelled frames (pooled diffusion features)…")
def _suggestions(data: str, signature: tuple, clf_path: str, clf_mtime: float, n: int) -> dict:
    from engine.data.folder import FolderDataset
    from engine.labelling.suggest import ranking_spec, suggest

    clf = _classifier(clf_path, clf_mtime)
    ds = FolderDataset(data)
    return suggest(clf.run, ds, n, ranking_spec(clf.run, clf), clf.cache, clf)


@st.cache_data(max_entries=32, show_spinner="Pre-labelling with the classifier…")
def _prediction(data: str, stem: str, clf_path: str, clf_mtime: float):
    from engine.data.folder import FolderDataset

    from engine.outputs.segment_outputs import segment_array

    return segment_array(_classifier(clf_path, clf_mtime), FolderDataset(data).image(stem), stem).labels


def _mtime(p: Path) -> float:
    f = p / "weights.pt"
    return f.stat().st_mtime if f.exists() else 0.0


# ---- page -------------------------------------------------------------------------------------------
ws = state.workspace()
st.title("Label")
st.caption("Label the frames that help most: ranked by uncertainty × diversity in diffusion-feature space, "
           "pre-labelled by the current classifier so you only correct it. Saved masks join the train split.")
if not state.need(ws, "run", "data", "classifier"):
    st.stop()
data: Path = ws.data  # type: ignore[assignment]
clf_path = Path(ss.get("label_classifier") or str(ws.classifier))
if not (clf_path / "weights.pt").is_file():
    clf_path = ws.classifier  # type: ignore[assignment]
clf = _classifier(str(clf_path), _mtime(clf_path))
classes = clf.classes

top = st.columns([2, 1, 1])
n_sugg = top[1].number_input("Suggestions", 1, 100, 10, key="label_n")
who = top[2].text_input("Annotator", value=current_user(), key="label_who")
try:
    report = _suggestions(str(data), _masks_signature(data), str(clf_path), _mtime(clf_path), int(n_sugg))
except ValueError as e:
    st.info(f"{e}. Bring unlabelled frames in with `python -m engine data import-frames SRC OUT` "
            "(or `data import-video`) and choose that data set in the sidebar.")
    practice = ws.out_dir / "label_practice" / data.name

    def _practice() -> None:
        from engine.labelling.label_store import labelling_copy

        if not (practice / "classes.json").is_file():
            labelling_copy(data, practice, keep_train=4)
        ss.ws_mode, ss.ws_run, ss.ws_data, ss.ws_clf = "Directories on disk", str(ws.run), str(practice), str(clf_path)

    st.button(f"Practise on a copy of `{data.name}` with only 4 train labels kept", key="label_practice",
              on_click=_practice, help=f"Writes {practice} (the other train frames become unlabelled) and selects it "
                                        "in the sidebar. The shipped classifier was fitted on all 20 train frames.")
    st.stop()
suggested = [s["stem"] for s in report["suggestions"]]
reasons = {s["stem"]: s["reason"] for s in report["suggestions"]}
top[0].markdown(f"**{len(suggested)} suggested** of {report['n_candidates']} unlabelled frames · "
                f"{report['n_labelled']} labelled in train · classifier `{clf_path.name}` · {report['strategy']}")
if "label_pos" not in ss or ss.get("label_for") != (str(data), tuple(suggested)):
    ss.label_pos, ss.label_for = 0, (str(data), tuple(suggested))
if ss.get("label_frame") in suggested:  # opened from the Segment page's review log
    ss.label_pos = suggested.index(ss.pop("label_frame"))
ss.label_pos = min(ss.label_pos, len(suggested) - 1)

nav = st.columns([1, 6, 1])
if nav[0].button("◀ Previous", disabled=ss.label_pos == 0, key="label_prev", width="stretch"):
    ss.label_pos -= 1
if nav[2].button("Next ▶", disabled=ss.label_pos >= len(suggested) - 1, key="label_next", width="stretch"):
    ss.label_pos += 1
stem = nav[1].selectbox("Frame", suggested, index=ss.label_pos, key=f"label_pick_{ss.label_pos}",
                        format_func=lambda s: f"{suggested.index(s) + 1}. {s}", label_visibility="collapsed")
ss.label_pos = suggested.index(stem)
st.caption(f"Why this frame: {reasons[stem]}")

image = state.frame(str(data), stem)
stacks = ss.setdefault("label_stacks", {})
key = (str(data), stem, str(clf_path))
if key not in stacks:
    stacks[key] = EditStack(_prediction(str(data), stem, str(clf_path), _mtime(clf_path)).copy())
stack: EditStack = stacks[key]

left, right = st.columns([2, 1], gap="medium")
with right:
    st.markdown("**Class** (keys 1–9)")
    ss.setdefault("label_class", classes.index("instrument") if "instrument" in classes.names else 0)
    for c in classes:
        if st.button(f"{c.id + 1} · {c.name}", key=f"label_cls_{c.id}", width="stretch",
                     type="primary" if ss.label_class == c.id else "secondary",
                     shortcut=str(c.id + 1) if c.id < 9 else None):
            ss.label_class = c.id
            st.rerun()
    st.markdown(state.legend_html(classes), unsafe_allow_html=True)
    st.markdown("**Tool** (B, E, P, F)")
    ss.setdefault("label_tool", "brush")
    for name, (label, short, _) in TOOLS.items():
        if st.button(label, key=f"label_tool_{name}", width="stretch", shortcut=short,
                     type="primary" if ss.label_tool == name else "secondary"):
            ss.label_tool = name
            st.rerun()
    ucols = st.columns(2)
    if ucols[0].button("Undo", key="label_undo", shortcut="z", width="stretch", disabled=not stack.edits):
        stack.undo()
        ss.label_nonce = ss.get("label_nonce", 0) + 1
        st.rerun()
    if ucols[1].button("Redo", key="label_redo", shortcut="y", width="stretch", disabled=not stack.undone):
        stack.redo()
        ss.label_nonce = ss.get("label_nonce", 0) + 1
        st.rerun()
    save = st.button("Save label", key="label_save", type="primary", shortcut="s", width="stretch")
    if st.button("Reset to prediction", key="label_reset", width="stretch", disabled=not stack.edits):
        stacks[key] = EditStack(stack.base)
        ss.label_nonce = ss.get("label_nonce", 0) + 1
        st.rerun()

with left:
    knobs = st.columns(2)
    size = knobs[0].slider("Brush size (screen px)", 1, 80, 24, key="label_size")
    opacity = knobs[1].slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key="label_opacity")
    knobs = st.columns(2)
    zoom = knobs[0].select_slider("Zoom", [1, 2, 4, 8], 1, key="label_zoom")
    canvas_w = knobs[1].select_slider("Canvas width (px)", [400, 480, 560, 640, 800, 960], 560, key="label_canvas_w",
                                      help="A canvas wider than this column scrolls sideways; narrow it on small screens.")
    cx = cy = 0.5
    if zoom > 1:
        pan = st.columns(2)
        cx = pan[0].slider("Pan ↔", 0.0, 1.0, 0.5, 0.01, key="label_cx")
        cy = pan[1].slider("Pan ↕", 0.0, 1.0, 0.5, 0.01, key="label_cy")
    st.markdown("<div style='height:30px'></div>", unsafe_allow_html=True)  # room for the canvas toolbar
    view = zoom_view(image.shape[:2], canvas_w, zoom, cx, cy)
    tool = ss.label_tool
    r, g, b = classes[ss.label_class].color
    colour = f"#{r:02x}{g:02x}{b:02x}" if tool != "eraser" else "#ffffff"
    result = st_canvas(
        stroke_width=size, stroke_color=colour, fill_color=colour + "66",
        background_image=render_view(image, stack.mask, classes.colors, opacity, view),
        width=view.canvas_w, height=view.canvas_h, drawing_mode=TOOLS[tool][2], point_display_radius=4,
        key=f"label_canvas_{stem}_{ss.get('label_nonce', 0)}")
    shapes = canvas_shapes(result.json_data, view, tool, ss.label_class)
    if shapes:  # commit the drawn shapes with exact ids, then show a fresh canvas over the new mask
        stack.apply(shapes)
        ss.label_nonce = ss.get("label_nonce", 0) + 1
        st.rerun()
    n_edits = len(stack.edits)
    changed = int((stack.mask != stack.base).sum())
    st.caption(f"{stem} · {image.shape[1]}×{image.shape[0]} px · {n_edits} edit{'s' if n_edits != 1 else ''} · "
               f"{changed:,} pixels changed from the prediction · tool: {TOOLS[tool][0].lower()}"
               f"{'' if tool == 'eraser' else ' · class: ' + classes[ss.label_class].name}"
               " · eraser sets pixels to ignore (255); fill recolours the clicked region; "
               "a polygon closes when you click its first point")

if save:
    try:
        entry = save_label(data, stem, stack.mask, who=who or None,
                           details={"edits": stack.summary(), "classifier": str(clf_path),
                                    "changed_pixels": changed, "suggestion_rank": ss.label_pos + 1})
    except (ValueError, KeyError, OSError) as e:
        st.error(str(e))
    else:
        st.toast(f"Saved {entry['mask']} ({entry['action']}) and added {stem} to the train split")
        ss.label_saved = entry


# ---- refit --------------------------------------------------------------------------------------------
st.divider()
st.subheader("Refit")
log = read_log(data)
saved = ss.get("label_saved")
if saved:
    st.success(f"Last saved: `{saved['mask']}` by {saved['who']} at {saved['time']}")
with st.expander("Refit settings"):
    rc = st.columns(2)
    members = rc[0].number_input("Ensemble members", 1, 20, int(clf.fit_config.members), key="label_refit_members")
    epochs = rc[1].number_input("Max epochs", 1, 50, int(clf.fit_config.max_epochs), key="label_refit_epochs")
if st.button("Refit classifier on the train split", key="label_refit"):
    out = ws.out_dir / "classifiers" / f"refit-{time.strftime('%Y%m%d-%H%M%S')}"
    job = jobs.start_job(ws.jobs_dir, "refit", ["refit", "--data", str(data), "--classifier", str(clf_path),
                                                 "--out", str(out), "--members", str(int(members)),
                                                 "--epochs", str(int(epochs))], cwd=wsmod.REPO_ROOT, watch=str(out))
    ss.label_refit_job = job["id"]
    st.toast(f"Started refit job {job['id']}")


def _before_after(rep: dict) -> None:
    b, a = rep["before"], rep["after"]
    m = st.columns(3)
    m[0].metric("Test mIoU before", f"{b['miou']:.3f}", help=f"{rep['n_train_before']} train frames")
    m[1].metric("Test mIoU after", f"{a['miou']:.3f}", delta=f"{a['miou'] - b['miou']:+.3f}",
                help=f"{rep['n_train_after']} train frames")
    m[2].metric("Train frames", rep["n_train_after"], delta=rep["n_train_after"] - (rep["n_train_before"] or 0))
    names = list(b["per_class_iou"])
    fig = go.Figure([go.Bar(name="before", x=names, y=[b["per_class_iou"][n] for n in names], marker_color="#9e9e9e"),
                     go.Bar(name="after", x=names, y=[a["per_class_iou"].get(n) for n in names], marker_color="#7b1fa2")])
    fig.update_layout(barmode="group", height=300, margin={"t": 30, "b": 10}, yaxis_title="test IoU",
                      title=f"Per-class IoU on {a['n_images']} test frames")
    st.plotly_chart(fig, width="stretch", key="label_refit_fig")


@st.fragment(run_every="2s")
def refit_panel() -> None:
    job_id = ss.get("label_refit_job")
    if not job_id:
        st.caption("Refit starts a background `python -m engine refit` job with the classifier's features; when it "
                   "ends, test mIoU before → after appears here and the new classifier pre-labels the next frames.")
        return
    job = jobs.get_job(ws.jobs_dir, job_id)
    if job["status"] in jobs.ACTIVE:
        with st.status(f"Refit running ({time.time() - job['started']:.0f} s)", state="running"):
            st.code(jobs.job_log(ws.jobs_dir, job_id, 600) or "(starting)", language="text")
        return
    rep = wsmod.read_json(Path(job["watch"]) / REPORT) if job.get("watch") else None
    if job["status"] != "done" or rep is None:
        st.error(f"Refit {job['status']} (exit {job['returncode']})")
        st.code(jobs.job_log(ws.jobs_dir, job_id, 2000), language="text")
        return
    st.markdown(f"**Refit done** → `{rep['classifier_after']}` (added: {', '.join(rep['train_stems_added']) or 'none'})")
    _before_after(rep)
    if ss.get("label_classifier") != rep["classifier_after"] and \
            st.button("Pre-label with the refitted classifier", key="label_use_refit"):
        ss.label_classifier = rep["classifier_after"]
        st.rerun(scope="app")


refit_panel()

with st.expander(f"Label history ({len(log)} saves, `labels_log.jsonl`)"):
    if log:
        st.dataframe(pd.DataFrame(log)[["time", "who", "stem", "action", "changed_pixels"]
                                       if "changed_pixels" in log[-1] else ["time", "who", "stem", "action"]].iloc[::-1],
                     hide_index=True, width="stretch")
    else:
        st.caption("Nothing saved yet.")


# ---- does choosing pay? --------------------------------------------------------------------------------
al = wsmod.read_json(ws.root / "active_learning.json") if ws.root else None
al = al or wsmod.read_json(wsmod.REPO_ROOT / "assets" / "active_learning.json")
if al:
    st.subheader("Does choosing the frames pay?")
    fig = go.Figure()
    colours = {"random": "#787878", "uncertainty": "#1f77b4", "uncertainty+diversity": "#d62728"}
    for name, s in al["strategies"].items():
        lo = [m - d for m, d in zip(s["mean"], s["sd"])]
        hi = [m + d for m, d in zip(s["mean"], s["sd"])]
        fig.add_trace(go.Scatter(x=al["labels"] + al["labels"][::-1], y=hi + lo[::-1], fill="toself", opacity=0.15,
                                 line={"width": 0}, fillcolor=colours.get(name), showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=al["labels"], y=s["mean"], name=name, mode="lines+markers",
                                 line={"color": colours.get(name)}))
    fig.update_layout(height=340, margin={"t": 30, "b": 10}, xaxis_title="labelled frames",
                      yaxis_title="test mIoU (mean ± sd)", title=f"Synthetic set with an oracle, {len(al['seeds'])} seeds")
    st.plotly_chart(fig, width="stretch", key="label_al_fig")
    most = al["labels"][-1]
    needed = ", ".join(f"{k}: {v if v is not None else f'more than {most}'}"
                       for k, v in al.get("labels_to_reach_target", {}).items())
    st.caption(f"Random choice with {most} labels reaches test mIoU {al['target_random_at_max']:.3f}. Labels each "
               f"strategy needs to match it — {needed}. `bench/active_learning.py` reproduces the figure.")
