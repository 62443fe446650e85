"""Activations: PCA maps of decoder blocks at a timestep, and the block × timestep mIoU sweep."""
from __future__ import annotations

import streamlit as st

from dashboard import state
from engine import explore, workspace as wsmod
from engine.evaluation import sweep_figure
from engine.render import overlay

ws = state.workspace()
st.title("Activations")
st.caption("Which decoder blocks, at which noise level, carry semantics? Colours are the first three principal "
           "components of a block's activations (one colour = one direction in activation space).")
if not state.need(ws, "run", "data"):
    st.stop()
run, ds = state.load_run(ws), state.load_dataset(ws)
n_blocks, T, size = len(run.model.output_blocks), run.diffusion.num_timesteps, run.image_size
clf0 = state.load_classifier(ws)
default_blocks = list(clf0.spec.blocks) if clf0 else [n_blocks // 3, n_blocks // 2, 2 * n_blocks // 3]

stems = ds.stems("test") or ds.stems("train") or ds.stems("unlabeled")
c1, c2, c3 = st.columns([1, 1, 2])
stem = c1.selectbox("Frame", stems, key="act_frame")
step = c2.slider("Timestep t", 0, T - 1, 50, key="act_step")
blocks = c3.multiselect("Blocks", list(range(n_blocks)), default=default_blocks, key="act_blocks")

image = explore.model_input(ds, stem, size)
img8, truth = explore.frame_and_truth(ds, stem, size)


@st.cache_data(max_entries=64, show_spinner="Computing activations…")
def pca_maps(weights_hash: str, data: str, stem: str, step: int, blocks: tuple[int, ...]) -> dict:
    return explore.block_pca(run, image, step, blocks, state.feature_cache(run))


if blocks:
    maps = pca_maps(run.weights_hash, str(ws.data), stem, int(step), tuple(blocks))
    cols = st.columns(len(blocks) + 1)
    cols[0].image(img8, caption=f"frame {stem}", width="stretch")
    for col, b in zip(cols[1:], blocks):
        m = maps[b]
        col.image(m["upsampled"], caption=f"block {b} · {m['shape'][0]} ch", width="stretch")
        k = max(1, size // m["native"].shape[0])  # nearest-neighbour blow-up so native pixels stay visible
        col.image(m["native"].repeat(k, 0).repeat(k, 1), caption=f"native {m['shape'][1]}×{m['shape'][2]}", width="stretch")
else:
    st.info("Choose at least one block.")

st.subheader("Block × timestep sweep")
sweep = wsmod.read_json(ws.sweep)
if not sweep:
    st.info("No sweep result in this workspace (demo_sweep.json). Run `sweep` as a job on the **Train** page.")
    st.stop()
scored_on = sweep.get("scored_on", "test frames (a sweep from before cross-validation)")
st.caption(f"Best cell: block {sweep['best']['block']} at t={sweep['best']['step']} "
           f"(mIoU {sweep['best']['miou']:.3f}), scored by {scored_on}. Click a cell to inspect it.")
if sweep.get("mode") != "cv":
    st.warning("This sweep was scored on test frames: read it as a report, and choose recipes from a "
               "cross-validated sweep (`python -m engine sweep`, the default `--split cv`).")
event = st.plotly_chart(sweep_figure(sweep), width="stretch", on_select="rerun", selection_mode="points",
                        key="act_sweep")
pts = (event or {}).get("selection", {}).get("points", []) if event else []
cell = None
if pts:
    try:
        cell = (int(pts[0]["y"]), int(pts[0]["x"]))
    except (KeyError, TypeError, ValueError):
        cell = None
s1, s2 = st.columns(2)
sb = s1.selectbox("Cell block", sweep["blocks"], index=sweep["blocks"].index(cell[0] if cell else sweep["best"]["block"]),
                  key=f"act_cell_block_{cell}")
st_ = s2.selectbox("Cell timestep", sweep["steps"], index=sweep["steps"].index(cell[1] if cell else sweep["best"]["step"]),
                   key=f"act_cell_step_{cell}")
if sb >= n_blocks or st_ >= T:
    st.warning("This sweep was computed on another model; its cells do not exist in the current run.")
    st.stop()
cell_map = pca_maps(run.weights_hash, str(ws.data), stem, int(st_), (int(sb),))[int(sb)]
k1, k2, k3 = st.columns(3)
k1.image(img8, caption=f"frame {stem}", width="stretch")
k2.image(cell_map["upsampled"], caption=f"PCA block {sb} at t={st_}", width="stretch")
store = state.result_store("cells")
ckey = (run.weights_hash, str(ws.data), int(sb), int(st_))
if ckey in store:
    clf, _ = store[ckey]
    pred = clf.predict_tensor(image)
    k3.image(overlay(img8, pred.labels.numpy().astype("uint8"), clf.classes, 0.6),
             caption=f"prediction from block {sb} at t={st_} alone", width="stretch")
elif k3.button("Predict with this cell", key="act_cell_fit", help="Fits a small classifier on this block/timestep only"):
    with st.spinner("Fitting a one-cell classifier…"):
        store[ckey] = explore.quick_fit(run, ds, [int(st_)], [int(sb)], state.feature_cache(run), max_test=4)
    st.rerun()
