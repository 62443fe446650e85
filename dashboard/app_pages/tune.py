"""Tune: choose timesteps and blocks; a live preview scores the recipe in well under a second, the ensemble on request.

Preview = closed-form shrinkage LDA on a fixed draw of train pixels, scored by k-fold cross-validation over the
train frames (engine.app.preview), labelled as such; it never reads a test frame. "Fit
ensemble" uses the sweep's settings on the sweep's frames, so it reproduces the heat map's number for a single
cell; "Save" fits the full ensemble (the `fit` command's defaults) and can switch the workspace to it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import state
from engine.app import explore, workspace as wsmod
from engine.segmentation.classifier_training import FitConfig
from engine.scoring.evaluation import SWEEP_FIT
from engine.segmentation.features import default_spec
from engine.outputs.render import overlay

ws = state.workspace()
st.title("Tune")
st.caption("Pick diffusion timesteps and decoder blocks. Each change is scored at once by a **preview** (a closed-form "
           "linear head on the cached features, cross-validated on the train frames, never a test frame); **Fit "
           "ensemble** gives the pixel-MLP ensemble's score with the sweep's settings, and **Save** fits the full ensemble.")
if not state.need(ws, "run", "data"):
    st.stop()
run, ds = state.load_run(ws), state.load_dataset(ws)
clf0 = state.load_classifier(ws)
n_blocks, T = len(run.model.output_blocks), run.diffusion.num_timesteps
sweep = wsmod.read_json(ws.sweep) or {}
MAX_TEST = int(sweep.get("n_test") or 20)  # the sweep's frames, so numbers of the same cell agree
store: dict = state.result_store("tune")  # (weights, data, steps, blocks, kind) -> (model, result), shared LRU


start = clf0.spec if clf0 else default_spec(run)  # the workspace classifier's recipe, else the model default
default_steps, default_blocks = list(start.steps), list(start.block_list)
step_options = sorted({5, 10, 20, 50, 100, 150, 250, 400, 600, 800, *default_steps, *sweep.get("steps", [])}
                      & set(range(T)))
for key, default in (("tune_steps", default_steps), ("tune_blocks", default_blocks)):
    st.session_state.setdefault(key, default)
c1, c2 = st.columns(2)
steps = c1.multiselect("Timesteps t", step_options, key="tune_steps",
                       help="Noise level the frame is diffused to before its activations are read (0 = clean).")
blocks = c2.multiselect("Decoder blocks", list(range(n_blocks)), key="tune_blocks")
st.caption(f"Decoder blocks are the UNet decoder's `output_blocks[i]`: **0 = deepest** (coarsest, most abstract), "
           f"**{n_blocks - 1} = last**, at full resolution. Sweep results exist at t = "
           f"{', '.join(map(str, sweep.get('steps', []))) or 'none'}.")
if not (steps and blocks):
    st.warning("Choose at least one timestep and one block.")
    st.stop()
recipe = (tuple(sorted(int(s) for s in steps)), tuple(sorted(int(b) for b in blocks)))
base = (run.weights_hash, str(ws.data), *recipe)
bank = state.feature_bank(ws, MAX_TEST)
n_scored = len(bank.stems["test"])
frames_note = f"first {n_scored} test frames (the sweep's)"

# ---- live preview ----------------------------------------------------------------------------------------
pkey = (*base, "preview")
if pkey not in store:
    with st.spinner("Preview: fitting the closed-form head on the cached features…"):
        store[pkey] = explore.preview_fit(bank, *recipe)
    while len(store) > 24:
        store.pop(next(iter(store)))
history: list[dict] = st.session_state.setdefault("tune_history", [])


def add_history(kind: str, result: dict) -> None:
    """Append a fit to the session's history (once per recipe and kind) with its delta to the previous fit."""
    tag = (kind, *recipe)
    if history and history[-1]["_tag"] == tag:
        return
    prev = history[-1]["mIoU"] if history else None
    history.append({"_tag": tag, "#": len(history) + 1, "fit": kind, "t": ",".join(map(str, recipe[0])),
                    "blocks": ",".join(map(str, recipe[1])), "mIoU": result["miou"],
                    "Δ vs previous": "–" if prev is None else f"{result['miou'] - prev:+.3f}",
                    "scored on": result.get("scored_on", frames_note)})


add_history("preview", store[pkey][1])

b1, b2, b3 = st.columns([1, 1, 2])
ekey = (*base, "ensemble")
if b1.button("Fit ensemble", key="tune_refit", help=f"Pixel-MLP ensemble with the sweep's settings "
             f"({SWEEP_FIT.members} members × ≤{SWEEP_FIT.max_epochs} epochs), scored by 4-fold cross-validation "
             "on the train frames, like the preview"):
    with st.status("Fitting the ensemble (sweep settings)…", expanded=True) as status:
        bar = st.progress(0.0)
        def prog(d: int, t: int, msg: str, bar=bar) -> None:  # noqa: ANN001
            bar.progress(min(d / max(t, 1), 1.0), text=msg)

        store[ekey] = explore.quick_fit(run, ds, *recipe, state.feature_cache(run), MAX_TEST, SWEEP_FIT, prog)
        status.update(label=f"Ensemble fitted: mIoU {store[ekey][1]['miou']:.3f}", state="complete", expanded=False)
    add_history("ensemble (sweep settings)", store[ekey][1])
show_options = ["preview"] + (["ensemble"] if ekey in store else [])
shown = b2.radio("Show", show_options, index=len(show_options) - 1, key=f"tune_show_{len(show_options)}",
                 horizontal=True)
model, result = store[ekey] if shown == "ensemble" else store[pkey]
label = (f"ensemble, sweep settings ({SWEEP_FIT.members} members × ≤{SWEEP_FIT.max_epochs} epochs, "
         f"≤{SWEEP_FIT.max_pixels:,} px)" if shown == "ensemble" else
         f"{result['head']} — not the ensemble")

m1, m2, m3, m4 = st.columns(4)
m1.metric(f"mIoU ({shown})", f"{result['miou']:.3f}")
m2.metric("Pixel accuracy", f"{result['pixel_accuracy']:.3f}")
m3.metric("Dice", f"{result['dice']:.3f}")
m4.metric("Feature dim", sum(run.model.output_channels[b] for b in recipe[1]) * len(recipe[0]))
st.caption(f"t={list(recipe[0])}, blocks={list(recipe[1])} · {label} · scored by "
           f"{result.get('scored_on', frames_note)} · {result['convention']}")
if len(recipe[1]) == 1 and len(recipe[0]) == 1 and sweep:
    try:
        cell = sweep["miou"][sweep["blocks"].index(recipe[1][0])][sweep["steps"].index(recipe[0][0])]
        st.caption(f"The sweep's heat map shows {cell:.3f} for this cell (ensemble, sweep settings, scored by "
                   f"{sweep.get('scored_on', f'the first {MAX_TEST} test frames')}).")
    except ValueError:
        pass
if clf0 is not None:  # the workspace recipe through the same preview and CV: comparable, and no test frame read
    w_recipe = (tuple(sorted(int(t) for t in clf0.spec.steps)), tuple(sorted(clf0.spec.block_list)))
    wkey = (run.weights_hash, str(ws.data), *w_recipe, "preview")
    if wkey not in store:
        with st.spinner("Scoring the workspace classifier's recipe with the same preview…"):
            store[wkey] = explore.preview_fit(bank, *w_recipe)
    full = wsmod.read_json(ws.metrics) or {}
    st.caption(f"Workspace classifier's recipe (t={list(w_recipe[0])}, blocks={list(w_recipe[1])}) through the same "
               f"preview: {store[wkey][1]['miou']:.3f}, scored the same way"
               + (f". The classifier itself ({clf0.fit_config.members}-member ensemble) scores {full['miou']:.3f} on all "
                  f"{full.get('n_images')} test frames (Overview; test frames are for that report only)."
                  if full.get("miou") else "."))

st.subheader("Refit history")
hist = pd.DataFrame([{k: v for k, v in h.items() if k != "_tag"} for h in history])
st.dataframe(hist, hide_index=True, width="stretch", key="tune_history_table",
             column_config={"mIoU": st.column_config.NumberColumn(format="%.3f")})
if st.button("Clear history", key="tune_clear"):
    history.clear()
    st.rerun()

names, colors = ds.classes.names, {c.name: f"rgb{tuple(c.color)}" for c in ds.classes}
g1, g2 = st.columns(2)
iou_vals = [result["per_class_iou"].get(n) for n in names]
iou = pd.DataFrame({"class": names, "IoU": [v if v is not None else 0.0 for v in iou_vals],
                    "label": [f"{v:.3f}" if v is not None else "absent" for v in iou_vals]})
fig = px.bar(iou, x="class", y="IoU", color="class", color_discrete_map=colors, range_y=[0, 1.08], text="label",
             title="Per-class IoU")
fig.update_traces(textposition="outside", cliponaxis=False)
fig.update_layout(showlegend=False, height=340, margin={"t": 40, "b": 10})
g1.plotly_chart(fig, width="stretch", config=state.plotly_config("per_class_iou"), key="tune_iou")
cm = np.array(result["confusion"], dtype=float)
cmn = cm / np.maximum(cm.sum(1, keepdims=True), 1)
fig = px.imshow(cmn, x=names, y=names, text_auto=".2f", color_continuous_scale="Blues", zmin=0, zmax=1,
                labels={"x": "predicted", "y": "truth", "color": "share of row"}, title="Confusion matrix (row-normalised)")
fig.update_layout(height=340, margin={"t": 40, "b": 10})
g2.plotly_chart(fig, width="stretch", config=state.plotly_config("confusion"), key="tune_cm")

st.subheader("Scored frames")
st.caption(("Every train frame, each predicted by the fold head that did not see it: " if result.get("split") == "cv"
            else "Every scored frame: ") + "click a row to inspect it, click a header to sort (by IoU or uncertainty). "
           + ("Uncertainty here is the preview's entropy (top 10 % of pixels)." if shown == "preview" else
              "Uncertainty is the ensemble's Jensen–Shannon score (top 10 % of pixels)."))
frames = pd.DataFrame(result["per_frame"]).sort_values("mIoU").reset_index(drop=True)
event = st.dataframe(frames, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                     key=f"tune_frames_{shown}", height=240,
                     column_config={"mIoU": st.column_config.NumberColumn(format="%.3f"),
                                    "uncertainty": st.column_config.NumberColumn(format="%.3f")})
rows = (event.selection.rows if event and hasattr(event, "selection") else []) or [0]
stem = frames.loc[rows[0], "frame"]
opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="tune_opacity")
pred = result["_predictions"][result["_stems"].index(stem)]
img, truth = explore.frame_and_truth(ds, stem, pred.shape[0])
err = np.zeros((*pred.shape, 3), dtype=np.uint8) + 235
if truth is not None:
    wrong = (pred != truth) & (truth != 255)
    err[wrong] = (220, 30, 30)
    err[truth == 255] = (150, 150, 150)
cols = st.columns(4)
row = frames.loc[rows[0]]
cols[0].image(img, caption=f"{stem}", width="stretch")
cols[1].image(overlay(img, truth, ds.classes, opacity) if truth is not None else img, caption="truth", width="stretch")
cols[2].image(overlay(img, pred, ds.classes, opacity), caption=f"prediction · IoU {row['mIoU']:.3f}", width="stretch")
cols[3].image(err, caption=f"errors: red = prediction ≠ truth ({(err[..., 1] == 30).mean():.1%} of pixels)",
              width="stretch")
st.markdown(state.legend_html(ds.classes), unsafe_allow_html=True)

# ---- save the full ensemble and use it ------------------------------------------------------------------
st.subheader("Save")
if state.policy().public:
    st.info("Saving classifiers is off in public/demo mode.")
    st.stop()
name = st.text_input("Classifier name", value=f"clf_t{'-'.join(map(str, recipe[0]))}_b{'-'.join(map(str, recipe[1]))}",
                     key="tune_name")
FULL = FitConfig()
s1, s2 = st.columns(2)
save = s1.button("Save classifier", key="tune_save",
                 help=f"Fits the full ensemble ({FULL.members} members × ≤{FULL.max_epochs} epochs, the `fit` defaults) "
                      "on every train frame and writes it")
save_use = s2.button("Save and use this classifier", key="tune_save_use", type="primary",
                     help="The same, then switches the sidebar workspace to it")
if save or save_use:
    with st.status("Fitting the full ensemble…", expanded=True) as status:
        bar = st.progress(0.0)
        def prog(d: int, t: int, msg: str, bar=bar) -> None:  # noqa: ANN001
            bar.progress(min(d / max(t, 1), 1.0), text=msg)

        from engine.segmentation.classifier import fit_classifier
        from engine.segmentation.features import FeatureSpec

        clf = fit_classifier(run, ds, FeatureSpec(*recipe), FULL, cache=state.feature_cache(run), progress=prog)
        out = state.policy().check(ws.out_dir / "classifiers" / name, "Classifier directory", write=True)
        clf.save(out)
        status.update(label=f"Saved to {out}", state="complete", expanded=False)
    if save_use:
        state.use_workspace(run=str(ws.run), data=str(ws.data), classifier=str(out))
        st.session_state["tune_used"] = str(out)
        st.rerun()
    st.success(f"Saved to `{out}`.")
if st.session_state.get("tune_used"):
    st.success(f"Now using `{st.session_state.pop('tune_used')}` (sidebar → Directories on disk).")
