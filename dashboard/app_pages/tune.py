"""Tune: choose timesteps and blocks, refit the pixel classifier on cached features, inspect the result."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import state
from engine import explore
from engine.render import overlay

ws = state.workspace()
st.title("Tune")
st.caption("Pick diffusion timesteps and decoder blocks; a small pixel-classifier ensemble refits on cached "
           "features in seconds and is scored by cross-validation on the labelled train frames, so a recipe chosen "
           "here has not seen a test frame. `python -m engine fit --recipe auto` runs the same search for you.")
if not state.need(ws, "run", "data"):
    st.stop()
run, ds = state.load_run(ws), state.load_dataset(ws)
clf0 = state.load_classifier(ws)
n_blocks, T = len(run.model.output_blocks), run.diffusion.num_timesteps
store: dict = state.result_store("tune")  # (weights, data, steps, blocks) -> (clf, result), shared LRU
MAX_TEST = 12

default_steps = list(clf0.spec.steps) if clf0 else [50, 150]
default_blocks = list(clf0.spec.blocks) if clf0 else [max(0, n_blocks // 2 - 1), n_blocks // 2]
step_options = sorted({5, 10, 20, 50, 100, 150, 250, 400, 600, 800, *default_steps} & set(range(T)))
c1, c2 = st.columns(2)
steps = c1.multiselect("Timesteps t", step_options, default=default_steps, key="tune_steps")
blocks = c2.multiselect("Decoder blocks", list(range(n_blocks)), default=default_blocks, key="tune_blocks",
                        help=f"output_blocks[i] of the UNet decoder (0 = deepest, {n_blocks - 1} = full resolution)")
SCORINGS = {"cross-validation on train frames": "cv", "test frames (reporting only)": "test"}
scoring_label = st.radio("Score on", list(SCORINGS), horizontal=True, key="tune_scoring",
                         help="Choose recipes by cross-validation. Test frames are for the final report: a recipe "
                              "picked by its test score is optimistic.")
scoring = SCORINGS[scoring_label]
if scoring == "test":
    st.warning("Scoring on test frames: use this to report, not to choose timesteps or blocks.")
key = (run.weights_hash, str(ws.data), tuple(sorted(steps)), tuple(sorted(blocks)), scoring)

b1, b2 = st.columns([1, 3])
refit = b1.button("Refit classifier", type="primary", disabled=not (steps and blocks), key="tune_refit")
if not (steps and blocks):
    st.warning("Choose at least one timestep and one block.")

if refit and key not in store:
    with st.status("Fitting the pixel classifier…", expanded=True) as status:
        bar = st.progress(0.0)
        prog = lambda d, t, msg: bar.progress(min(d / max(t, 1), 1.0), text=msg)  # noqa: E731
        clf, result = explore.quick_fit(run, ds, key[2], key[3], state.feature_cache(run), MAX_TEST, progress=prog,
                                        scoring=scoring)
        store[key] = (clf, result)
        while len(store) > 8:
            store.pop(next(iter(store)))
        status.update(label=f"Fitted: mIoU {result['miou']:.3f}", state="complete", expanded=False)

if key in store:
    clf, result = store[key]
    source = f"refit on t={list(key[2])}, blocks={list(key[3])}"
elif clf0 is not None:
    clf = clf0
    base_key = ("shipped", str(ws.classifier), str(ws.data), scoring)
    if base_key not in store:
        with st.spinner("Scoring the workspace classifier's recipe…"):
            if scoring == "cv":  # the recipe re-fitted per fold: the shipped weights have seen every train frame
                store[base_key] = (clf0, explore.quick_fit(run, ds, clf0.spec.steps, clf0.spec.blocks,
                                                           state.feature_cache(run), scoring="cv")[1])
            else:
                store[base_key] = (clf0, explore.evaluate_on(clf0, ds, MAX_TEST))
    result = store[base_key][1]
    source = (f"workspace classifier's recipe (t={list(clf0.spec.steps)}, blocks={list(clf0.spec.blocks)}"
              + ("; refit per fold with the quick settings: 2 members, one noise, no flip)" if scoring == "cv" else ")"))
    if (tuple(sorted(steps)), tuple(sorted(blocks))) != (tuple(sorted(clf0.spec.steps)), tuple(sorted(clf0.spec.blocks))):
        st.info("Selection changed: press **Refit classifier** to score it.")
else:
    st.info("No classifier in the workspace yet: press **Refit classifier**.")
    st.stop()

m1, m2, m3, m4 = st.columns(4)
m1.metric("mIoU", f"{result['miou']:.3f}")
m2.metric("Pixel accuracy", f"{result['pixel_accuracy']:.3f}")
m3.metric("Dice", f"{result['dice']:.3f}")
m4.metric("Feature dim", clf.model.in_dim)
st.caption(f"{source} · scored by {result.get('scored_on', 'test frames')} · {result['convention']}")

names, colors = clf.classes.names, {c.name: f"rgb{tuple(c.color)}" for c in clf.classes}
g1, g2 = st.columns(2)
iou = pd.DataFrame({"class": names, "IoU": [result["per_class_iou"].get(n) for n in names]})
fig = px.bar(iou, x="class", y="IoU", color="class", color_discrete_map=colors, range_y=[0, 1], title="Per-class IoU")
fig.update_layout(showlegend=False, height=340, margin={"t": 40, "b": 10})
g1.plotly_chart(fig, width="stretch")
cm = np.array(result["confusion"], dtype=float)
cmn = cm / np.maximum(cm.sum(1, keepdims=True), 1)
fig = px.imshow(cmn, x=names, y=names, text_auto=".2f", color_continuous_scale="Blues", zmin=0, zmax=1,
                labels={"x": "predicted", "y": "truth", "color": "share of row"}, title="Confusion matrix (row-normalised)")
fig.update_layout(height=340, margin={"t": 40, "b": 10})
g2.plotly_chart(fig, width="stretch")

st.subheader("Held-out train frames (each predicted by the fold that did not see it)" if scoring == "cv"
             else "Test-frame predictions")
opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="tune_opacity")
stems, preds = result["_stems"], result["_predictions"]
cols = st.columns(3)
cols[0].markdown("**frame**"); cols[1].markdown("**truth**"); cols[2].markdown("**prediction**")  # noqa: E702
for stem, pred in list(zip(stems, preds))[:3]:
    img, truth = explore.frame_and_truth(ds, stem, pred.shape[0])
    cols = st.columns(3)
    cols[0].image(img, caption=stem, width="stretch")
    if truth is not None:
        cols[1].image(overlay(img, truth, clf.classes, opacity), width="stretch")
    cols[2].image(overlay(img, pred, clf.classes, opacity), width="stretch")
st.markdown(state.legend_html(clf.classes), unsafe_allow_html=True)

if key in store:
    st.subheader("Save")
    st.caption("The saved classifier is fitted on every train frame with the quick settings; for the shipped "
               "quality use `python -m engine fit` (10 members) with the same timesteps and blocks.")
    name = st.text_input("Classifier name", value=f"clf_t{'-'.join(map(str, key[2]))}_b{'-'.join(map(str, key[3]))}",
                         key="tune_name")
    if st.button("Save classifier", key="tune_save"):
        out = clf.save(ws.out_dir / "classifiers" / name)
        st.success(f"Saved to `{out}` — use it from the sidebar (Directories on disk → Classifier directory).")
