"""Samples: generated frames beside real ones; generate more on request."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import state
from engine.diffusion.samplers import SAMPLERS
from engine.segment_outputs import png_bytes
from engine.training.grid import make_grid

ws = state.workspace()
st.title("Samples")
st.caption("What the diffusion model learned to draw, next to real frames from the data set.")
if not state.need(ws, "run"):
    st.stop()

left, right = st.columns(2)
with left:
    shipped = ws.root / "demo_samples.png" if ws.root and ws.run == ws.root / "demo_run" else None
    latest = ws.run / "samples" / "latest.png" if ws.run else Path("-")
    if shipped is not None and shipped.is_file():
        st.subheader("Generated")
        st.image(str(shipped), width="stretch", caption="16 DDPM samples, 500 steps, seed 1 (demo_samples.png)")
    elif latest.is_file():
        st.subheader("Generated (latest from training)")
        st.image(str(latest), width="stretch", caption="the sample grid written during pretraining")
    else:
        st.subheader("Generated")
        st.info("This run has no samples/latest.png yet; generate some below.")
with right:
    st.subheader("Real frames")
    if ws.data is not None:
        ds = state.load_dataset(ws)
        stems = (ds.stems("train") or ds.stems("unlabeled"))[:8]
        cols = st.columns(4)
        for i, stem in enumerate(stems):
            cols[i % 4].image(state.frame(str(ws.data), stem), caption=stem, width="stretch")
    else:
        st.info("No data set in this workspace.")

st.subheader("Generate more")
with st.form("sample_form"):
    c1, c2, c3, c4 = st.columns(4)
    sampler = c1.selectbox("Sampler", list(SAMPLERS),
                           help="  \n".join(f"**{n}**: {cls.description}" for n, cls in SAMPLERS.items()))
    steps = c2.slider("Sampling steps", 5, 500, 100, step=5)
    seed = c3.number_input("Seed", 0, 2**31 - 1, 0)
    n = c4.slider("Samples", 1, 16, 4)
    go = st.form_submit_button("Generate", type="primary")

if go:
    from engine.sampling import sample_images

    run = state.load_run(ws)
    bar = st.progress(0.0, text="sampling…")

    def show(done: int, total: int) -> None:
        bar.progress(min(done / total, 1.0), text=f"sampling step {done}/{total}")

    images = sample_images(run, int(n), sampler, int(steps), int(seed), batch_size=8, progress=show)
    bar.empty()
    st.session_state["samples"] = {"images": images, "label": f"{sampler}-{steps}steps-seed{seed}"}

got = st.session_state.get("samples")
if got:
    images = got["images"]
    img_cols = st.columns(min(len(images), 8))
    for i, img in enumerate(images):
        img_cols[i % len(img_cols)].image(img, width="stretch")

    grid = make_grid(images)
    st.download_button("Download grid (PNG)", png_bytes(grid), file_name=f"samples-{got['label']}.png",
                       mime="image/png")
