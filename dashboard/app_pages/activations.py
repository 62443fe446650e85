"""Activations: PCA maps of decoder blocks at a timestep, and the block × timestep mIoU sweep (click a cell)."""
from __future__ import annotations

import streamlit as st

from dashboard import state
from engine.app import explore, workspace as wsmod
from engine.scoring.evaluation import sweep_figure
from engine.segmentation.features import default_spec
from engine.outputs.render import overlay

ws = state.workspace()
st.title("Activations")
st.caption("Which decoder blocks, at which noise level, carry semantics? Colours are the first three principal "
           "components of a block's activations (one colour = one direction in activation space).")
if not state.need(ws, "run", "data"):
    st.stop()
run, ds = state.load_run(ws), state.load_dataset(ws)
n_blocks, T, size = len(run.model.output_blocks), run.diffusion.num_timesteps, run.image_size
clf0 = state.load_classifier(ws)
# the workspace classifier's blocks, else the model's default recipe (engine.segmentation.features.default_spec)
default_blocks = list((clf0.spec if clf0 else default_spec(run)).block_list)
sweep = wsmod.read_json(ws.sweep) or {}
sweep_steps = [int(t) for t in sweep.get("steps", [])]

st.markdown(f"**Decoder blocks** are the outputs of the UNet decoder's blocks, `output_blocks[i]` for i = 0…{n_blocks - 1}: "
            f"**block 0 is the deepest** (coarsest grid, most abstract), block {n_blocks - 1} the last, at full resolution. "
            f"**Timestep t** is how far the frame is noised before its activations are read (0 = clean, {T - 1} = pure "
            "noise).")
stems = ds.stems("test") or ds.stems("train") or ds.stems("unlabeled")
c1, c2, c3 = st.columns([1, 1, 2])
stem = c1.selectbox("Frame", stems, key="act_frame")
if "act_jump" in st.session_state:  # a sweep timestep chosen below → the slider (before it is drawn)
    st.session_state["act_step"] = st.session_state.pop("act_jump")
st.session_state.setdefault("act_step", 50)
step = c2.slider("Timestep t", 0, T - 1, key="act_step")
blocks = c3.multiselect("Blocks", list(range(n_blocks)), default=default_blocks, key="act_blocks")
if sweep_steps:
    p1, p2 = st.columns([2, 3])
    p1.pills("Jump to a timestep the sweep covers", sweep_steps, key="act_step_pills", selection_mode="single",
             on_change=lambda: st.session_state.update(act_jump=st.session_state.get("act_step_pills") or step),
             help="The block × timestep sweep below has results only for these t")
    p2.caption(f"Sweep results exist at t = {', '.join(map(str, sweep_steps))}; "
               + (f"**t = {step} has them.**" if step in sweep_steps else f"t = {step} has none (the slider covers "
                  f"0…{T - 1})."))
shared = c3.toggle("One PCA basis for all selected blocks", key="act_shared",
                   help="Off: each block gets its own PCA (colours are arbitrary per block and t). On: one joint basis "
                        "over the selected blocks, so the same colour means the same direction in every block.")

image = explore.model_input(ds, stem, size)
img8, truth = explore.frame_and_truth(ds, stem, size)


@st.cache_data(max_entries=64, show_spinner="Computing activations…")
def pca_maps(weights_hash: str, data: str, stem: str, step: int, blocks: tuple[int, ...], shared: bool) -> dict:
    return explore.block_pca(run, image, step, blocks, state.feature_cache(run), shared=shared)


if blocks:
    maps = pca_maps(run.weights_hash, str(ws.data), stem, int(step), tuple(blocks), bool(shared))
    per_row = 4
    tiles = [(img8, f"frame {stem}")]
    if truth is not None:
        tiles.append((overlay(img8, truth, ds.classes, 0.7), "ground truth"))
    for b in blocks:
        m = maps[b]
        evr = m["explained"]
        tiles.append((m["upsampled"], f"block {b} · {m['shape'][0]} ch · {m['shape'][1]}×{m['shape'][2]} native · "
                      f"PCs explain {sum(evr):.0%}" + (" (joint)" if shared else "")))
    for start in range(0, len(tiles), per_row):
        cols = st.columns(per_row)
        for col, (im, cap) in zip(cols, tiles[start:start + per_row]):
            col.image(im, caption=cap, width="stretch")
    st.markdown(state.legend_html(ds.classes), unsafe_allow_html=True)
    st.caption("Explained variance: the share of the activations' variance the three colour components carry "
               + ("(of the joint basis over the selected blocks)." if shared else "(each block's own PCA)."))
else:
    st.info("Choose at least one block.")

st.subheader("Block × timestep sweep")
if not sweep:
    st.info("No sweep result in this workspace (demo_sweep.json). Run `sweep` as a job on the **Train** page.")
    st.stop()
fit = sweep.get("fit", {})
cell = st.session_state.get("act_cell") or (int(sweep["best"]["block"]), int(sweep["best"]["step"]))
scored_on = sweep.get("scored_on", "the first test frames (a sweep from before cross-validation)")
st.caption(f"Best cell (red frame): block {sweep['best']['block']} at t={sweep['best']['step']} "
           f"(mIoU {sweep['best']['miou']:.3f}). **Click a cell to inspect it** (dashed frame). Each cell: "
           f"{fit.get('members', '?')}-member ensemble, ≤{fit.get('max_epochs', '?')} epochs, fitted on "
           f"{sweep.get('n_train', '?')} train frames, scored by {scored_on}.")
if sweep.get("mode") != "cv":
    st.warning("This sweep was scored on test frames: read it as a report, and choose recipes from a "
               "cross-validated sweep (`python -m engine sweep`, the default `--split cv`).")
event = st.plotly_chart(sweep_figure(sweep, cell), width="stretch", on_select="rerun", selection_mode="points",
                        key="act_sweep", config=state.plotly_config("sweep"))
pts = event.selection.points if event and hasattr(event, "selection") else []
if pts:
    cd = pts[0].get("customdata")
    if cd:
        new = (int(cd[0]), int(cd[1]))
        if new != cell:
            st.session_state["act_cell"] = new
            st.rerun()
sb, st_ = cell
if sb >= n_blocks or st_ >= T:
    st.warning("This sweep was computed on another model; its cells do not exist in the current run.")
    st.stop()
cell_miou = sweep["miou"][sweep["blocks"].index(sb)][sweep["steps"].index(st_)]
st.markdown(f"<div data-testid='selected-cell'><b>Selected cell: block {sb} at t = {st_}</b> — sweep mIoU "
            f"{cell_miou:.3f}</div>", unsafe_allow_html=True)


def open_in_tune(steps: list[int], blocks: list[int]) -> None:
    st.session_state["tune_steps"], st.session_state["tune_blocks"] = steps, blocks


o1, o2 = st.columns(2)
if o1.button(f"Open block {sb}, t={st_} in Tune", key="act_open_tune", icon=":material/tune:", type="primary"):
    open_in_tune([st_], [sb])
    st.switch_page("app_pages/tune.py")
best_b, best_t = int(sweep["best"]["block"]), int(sweep["best"]["step"])
if o2.button(f"Open the best cell (block {best_b}, t={best_t}) in Tune", key="act_open_best"):
    open_in_tune([best_t], [best_b])
    st.switch_page("app_pages/tune.py")

cell_map = pca_maps(run.weights_hash, str(ws.data), stem, int(st_), (int(sb),), False)[int(sb)]
k1, k2, k3, k4 = st.columns(4)
k1.image(img8, caption=f"frame {stem}", width="stretch")
k2.image(overlay(img8, truth, ds.classes, 0.7) if truth is not None else img8, caption="ground truth", width="stretch")
k3.image(cell_map["upsampled"], caption=f"PCA block {sb} at t={st_} · explains {sum(cell_map['explained']):.0%}",
         width="stretch")
store = state.result_store("cells")
max_test = int(sweep.get("n_test") or 20)
ckey = (run.weights_hash, str(ws.data), int(sb), int(st_))
if ckey not in store:
    with st.spinner("Preview of this cell alone (closed-form linear head on its features)…"):
        store[ckey] = explore.preview_fit(state.feature_bank(ws, max_test), [int(st_)], [int(sb)])
head, res = store[ckey]
frame_row = next((r for r in res["per_frame"] if r["frame"] == stem), None)
if frame_row:  # a scored (train) frame: its out-of-fold prediction, the one its IoU is of
    labels = res["_predictions"][res["_stems"].index(stem)]
else:
    labels = explore.preview_labels(run, head, image, [int(st_)], [int(sb)], state.feature_cache(run))
k4.image(overlay(img8, labels, ds.classes, 0.6), width="stretch",
         caption="prediction from this cell alone" + (f" · frame IoU {frame_row['mIoU']:.3f}" if frame_row else ""))
st.markdown(state.legend_html(ds.classes), unsafe_allow_html=True)
st.caption(f"One-cell preview: mIoU {res['miou']:.3f} by {res['scored_on']} ({res['head']}); the sweep's "
           f"ensemble scored {cell_miou:.3f} by {sweep.get('scored_on', f'the first {max_test} test frames')}.")
