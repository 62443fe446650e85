"""Samples: generated frames beside real ones; generate more on request."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import state
from engine.diffusion.samplers import SAMPLERS
from engine.outputs.segment_outputs import png_bytes
from engine.training.grid import make_grid

ws = state.workspace()
st.title("Samples")
st.caption("What the diffusion model learned to draw, next to frames from its data set.")
if not state.need(ws, "run"):
    st.stop()
st.caption(":material/palette: A blue, purple or red tint over a whole sample (a colour cast) is a sign of the short "
           "CPU training of the demo model (4000 steps), not of the data: the model has only partly learnt each "
           "frame's overall colour.")

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
    synthetic = state.is_embedded_demo(ws)
    st.subheader("Data-set frames" + (" (synthetic)" if synthetic else ""))
    if synthetic:
        st.caption("The embedded demo's training frames are rendered cataract scenes, not video frames.")
    if ws.data is not None:
        ds = state.load_dataset(ws)
        stems = (ds.stems("train") or ds.stems("unlabeled"))[:8]
        cols = st.columns(4)
        for i, stem in enumerate(stems):
            cols[i % 4].image(state.frame(str(ws.data), stem), caption=stem, width="stretch")
    else:
        st.info("No data set in this workspace.")

st.subheader("Generate more")
with st.container(border=True):
    c1, c2, c3, c4 = st.columns(4)
    sampler = c1.selectbox("Sampler", list(SAMPLERS),
                           help="  \n".join(f"**{n}**: {cls.description}" for n, cls in SAMPLERS.items()))
    steps = c2.slider("Sampling steps", 5, 500, 100, step=5)
    seed = c3.number_input("Seed", 0, 2**31 - 1, 0)
    n = c4.slider("Samples", 1, 16, 4)
    go = st.button("Generate", type="primary", key="samples_go")


@st.cache_data(max_entries=8, show_spinner="Timing one denoising step…")
def step_seconds(weights_hash: str, batch: int) -> float:
    from engine.diffusion.sampling import time_denoiser_step

    return time_denoiser_step(state.load_run(ws), batch)


BATCH = 8
if go:
    from engine.diffusion.sampling import estimate_sampling_seconds, sample_images

    run = state.load_run(ws)
    eta = estimate_sampling_seconds(step_seconds(run.weights_hash, min(int(n), BATCH)), int(n), int(steps), BATCH)
    bar = st.progress(0.0, text=f"sampling… about {eta:.0f} s on this machine")
    import time

    t0 = time.time()

    def report(d: int, t: int) -> None:
        left = (time.time() - t0) / max(d, 1) * (t - d)
        bar.progress(min(d / t, 1.0), text=f"sampling step {d}/{t} · about {left:.0f} s left (estimate {eta:.0f} s)")

    images = sample_images(run, int(n), sampler, int(steps), int(seed), batch_size=BATCH, progress=report)
    bar.empty()
    st.session_state["samples"] = {"images": images, "label": f"{sampler}-{steps}steps-seed{seed}",
                                   "sampler": sampler, "steps": int(steps), "seed": int(seed),
                                   "seconds": time.time() - t0}
else:
    run = state.load_run(ws)
    eta_s = step_seconds(run.weights_hash, min(int(n), BATCH))
    from engine.diffusion.sampling import estimate_sampling_seconds

    st.caption(f":material/timer: {int(n)} sample(s) × {int(steps)} steps will take about "
               f"{estimate_sampling_seconds(eta_s, int(n), int(steps), BATCH):.0f} s here "
               f"({eta_s * 1000:.0f} ms per denoising step of a batch of {min(int(n), BATCH)}).")

got = st.session_state.get("samples")
if got:
    images = got["images"]
    st.caption(f"Generated in {got.get('seconds', 0):.0f} s.")
    img_cols = st.columns(min(len(images), 4))
    for i, img in enumerate(images):
        img_cols[i % len(img_cols)].image(img, width="stretch",
                                          caption=f"#{i} · seed {got['seed']} · {got['sampler']} · {got['steps']} steps")

    grid = make_grid(images)
    st.download_button("Download grid (PNG)", png_bytes(grid), file_name=f"samples-{got['label']}.png",
                       mime="image/png")
