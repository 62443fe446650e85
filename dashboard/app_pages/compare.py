"""Compare: methods side by side (metrics table, per-class IoU, test frames), exports."""
from __future__ import annotations


import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import state
from engine import explore, jobs, workspace as wsmod
from engine.render import heatmap, overlay
from engine.segment_outputs import png_bytes
from engine.training.grid import make_grid

ws = state.workspace()
st.title("Compare")
st.caption("The diffusion-feature classifier against baselines (UNet, MAE, SwAV, DatasetDDPM, conditional diffusion).")

compare = wsmod.read_json(ws.compare)
metrics = {k: v for k, v in (compare or {}).items() if isinstance(v, dict) and "miou" in v}
if not metrics:
    st.info("No comparison result in this workspace yet (demo_compare.json). It can be computed as a background "
            "job; follow it on the **Train** page.")
    if ws.run is not None and ws.data is not None:
        methods = st.multiselect("Methods", ["ddpm", "unet", "mae", "swav", "datasetddpm", "conddiff"],
                                 default=["ddpm", "unet"], key="cmp_methods")
        if st.button("Run compare as a job", type="primary", key="cmp_start", disabled=not methods):
            out = ws.out_dir / "results" / "compare.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            job = jobs.start_job(ws.jobs_dir, "compare", ["compare", "--data", str(ws.data), "--run", str(ws.run),
                                                          "--methods", ",".join(methods), "--json", str(out)],
                                 cwd=wsmod.REPO_ROOT, watch=str(out))
            st.success(f"Started job `{job['id']}`; this page shows `{out}` once it is written.")
    st.stop()

rows = [{"method": m, "mIoU": v.get("miou"), "Dice": v.get("dice"), "pixel accuracy": v.get("pixel_accuracy"),
         "train s": v.get("train_seconds"), "infer s / image": v.get("infer_seconds_per_image")}
        for m, v in metrics.items()]
table = pd.DataFrame(rows).sort_values("mIoU", ascending=False)
st.subheader("Metrics")
st.dataframe(table, hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("mIoU", "Dice", "pixel accuracy")})
st.download_button("Export table (CSV)", table.to_csv(index=False), file_name="compare_metrics.csv", mime="text/csv",
                   key="cmp_csv")

per_class = pd.DataFrame([{"method": m, "class": c, "IoU": iou} for m, v in metrics.items()
                          for c, iou in (v.get("per_class_iou") or {}).items()])
if len(per_class):
    fig = px.bar(per_class, x="class", y="IoU", color="method", barmode="group", range_y=[0, 1],
                 title="Per-class IoU by method")
    fig.update_layout(height=380, margin={"t": 40, "b": 10})
    st.plotly_chart(fig, width="stretch")

st.subheader("Test frames")
if ws.data is None:
    st.stop()
ds = state.load_dataset(ws)
clf = state.load_classifier(ws)
test = ds.stems("test")
chosen = st.multiselect("Frames", test, default=test[:2], max_selections=6, key="cmp_frames")
if not chosen:
    st.stop()
size = clf.run.image_size if clf else 128
panels, labels = [], ["frame", "truth"] + (["ddpm (this workspace)", "ddpm uncertainty"] if clf else [])
for stem in chosen:
    img, truth = explore.frame_and_truth(ds, stem, size)
    row = [img, overlay(img, truth, ds.classes, 0.6) if truth is not None else img]
    if clf is not None:
        pred = clf.predict_tensor(explore.model_input(ds, stem, size))
        row += [overlay(img, pred.labels.numpy().astype(np.uint8), ds.classes, 0.6),
                heatmap(pred.js.numpy(), vmax=max(float(np.quantile(pred.js.numpy(), 0.995)), 0.01))]
    panels.append(row)
cols = st.columns(len(labels))
for c, lab in zip(cols, labels):
    c.markdown(f"**{lab}**")
for stem, row in zip(chosen, panels):
    cols = st.columns(len(labels))
    for c, im in zip(cols, row):
        c.image(im, width="stretch")
st.markdown(state.legend_html(ds.classes), unsafe_allow_html=True)
st.caption("Masks of the other methods appear here when the compare job stores per-frame predictions.")
figure = make_grid(np.stack([im for row in panels for im in row]), ncol=len(labels))
st.download_button("Export figure (PNG)", png_bytes(figure), file_name="compare_frames.png", mime="image/png",
                   key="cmp_png")
