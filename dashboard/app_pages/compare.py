"""Compare: methods side by side (metrics table, per-class IoU, test frames), exports."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from dashboard import state
from engine import explore, jobs
from engine import workspace as wsmod
from engine.compare_report import method_results, metric_rows
from engine.compare_stats import label_curve_path, stats_rows
from engine.render import heatmap, overlay
from engine.segment_outputs import png_bytes
from engine.training.grid import make_grid
from engine.uncertainty.scorecard import (
    reliability_points,
    risk_coverage_points,
    scorecard_rows,
)

ws = state.workspace()


def fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


st.title("Compare")
st.caption("The diffusion-feature classifier against baselines (UNet, MAE, SwAV, DatasetDDPM, conditional diffusion).")

compare = wsmod.read_json(ws.compare)
metrics = method_results(compare)
if not metrics:
    st.info("No comparison result in this workspace yet (demo_compare.json). It can be computed as a background "
            "job; follow it on the **Train** page.")
    if ws.run is not None and ws.data is not None:
        methods = st.multiselect("Methods", ["ddpm", "unet", "mae", "swav", "gan", "datasetddpm", "conddiff"],
                                 default=["ddpm", "unet"], key="cmp_methods")
        if st.button("Run compare as a job", type="primary", key="cmp_start", disabled=not methods):
            out = ws.out_dir / "results" / "compare.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            job = jobs.start_job(ws.jobs_dir, "compare", ["compare", "--data", str(ws.data), "--run", str(ws.run),
                                                          "--methods", ",".join(methods), "--json", str(out)],
                                 cwd=wsmod.REPO_ROOT, watch=str(out))
            st.success(f"Started job `{job['id']}`; this page shows `{out}` once it is written.")
    st.stop()

st.caption(f"{compare.get('n_test', '?')} test frames, {compare.get('n_train', '?')} labelled train frames, "
           f"{compare.get('image_size', '?')} px, budget `{compare.get('budget', '?')}`; unlabelled pool: "
           f"{compare.get('pool_size', '?')} images from {compare.get('pool_source', '?')}. Source: `{ws.compare}`")
table = pd.DataFrame(metric_rows(compare)).sort_values("mIoU", ascending=False)
st.subheader("Metrics")
num = [c for c in table.columns if c not in ("method", "train s", "infer s / image")]
st.dataframe(table, hide_index=True, width="stretch",
             column_config={**{c: st.column_config.NumberColumn(format="%.3f") for c in num},
                            "train s": st.column_config.NumberColumn(format="%.0f"),
                            "infer s / image": st.column_config.NumberColumn(format="%.3f")})
st.download_button("Export table (CSV)", table.to_csv(index=False), file_name="compare_metrics.csv", mime="text/csv",
                   key="cmp_csv")

stat_rows = stats_rows(compare)
if stat_rows:
    st.subheader("Error bars")
    boot = compare.get("bootstrap") or {}
    st.caption(f"95 % bootstrap intervals over the {compare.get('n_test', '?')} test frames "
               f"({boot.get('n_boot', '?')} resamples, seed {boot.get('seed', '?')})"
               + (f"; mean ± sd over seeds {compare['seeds']}; paired bootstrap of each method against ddpm on the "
                  "same frames (seeds pooled)" if compare.get("seeds") else "") + ".")
    sdf = pd.DataFrame(stat_rows).sort_values("mIoU", ascending=False)
    efig = go.Figure(go.Scatter(x=sdf["method"], y=sdf["mIoU"], mode="markers", name="first seed, 95 % CI over frames",
                                marker={"color": "#1f77b4", "size": 9},
                                error_y={"type": "data", "symmetric": False, "array": sdf["CI high"] - sdf["mIoU"],
                                         "arrayminus": sdf["mIoU"] - sdf["CI low"]}))
    if sdf["seeds mean"].notna().any():
        efig.add_trace(go.Scatter(x=sdf["method"], y=sdf["seeds mean"], mode="markers", name="mean ± sd over seeds",
                                  marker={"symbol": "diamond", "color": "#ff7f0e", "size": 9},
                                  error_y={"type": "data", "array": sdf["seeds sd"], "color": "#ff7f0e"}))
    efig.update_layout(scattermode="group")  # the two estimates side by side per method
    efig.update_layout(height=340, margin={"t": 30, "b": 10}, yaxis_title="mIoU", legend={"orientation": "h"})
    st.plotly_chart(efig, width="stretch", key="cmp_errbars")
    st.dataframe(sdf, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in sdf.columns
                                if c not in ("method", "seeds", "p vs ddpm")}
                 | {"p vs ddpm": st.column_config.NumberColumn(format="%.3g")})

curve_path = label_curve_path(ws.compare)
curve = wsmod.read_json(curve_path) if curve_path else None
if curve and curve.get("curves"):
    st.subheader("Label-count curve")
    cfig = go.Figure()
    for name, cur in curve["curves"].items():
        xs = [int(c) for c in cur]
        cfig.add_trace(go.Scatter(x=xs, y=[v["mean"] for v in cur.values()], mode="lines+markers", name=name,
                                  error_y={"type": "data", "array": [v["sd"] for v in cur.values()]}))
    cfig.update_layout(height=360, margin={"t": 30, "b": 10}, xaxis={"type": "log", "title": "labelled train frames"},
                       yaxis_title="test mIoU (mean ± sd)")
    st.plotly_chart(cfig, width="stretch", key="cmp_curve")
    st.caption(f"mean ± sd over seeds {curve['seeds']} × up to {curve['draws']} random label draws, "
               f"{curve['n_test']} test frames, budget `{curve['budget']}`. Source: `{curve_path}`")

per_class = pd.DataFrame([{"method": m, "class": c, "IoU": iou} for m, v in metrics.items()
                          for c, iou in (v.get("per_class_iou") or {}).items()])
if len(per_class):
    fig = px.bar(per_class, x="class", y="IoU", color="method", barmode="group", range_y=[0, 1],
                 title="Per-class IoU by method")
    fig.update_layout(height=380, margin={"t": 40, "b": 10})
    st.plotly_chart(fig, width="stretch")

review = metrics.get("conddiff", {}).get("review")
if review:
    msg = (f"**Conditional diffusion review flag** (score > {review['threshold']}, K = {review['samples']}): "
           f"{review['n_flagged']} of {review['n_flagged'] + review['n_unflagged']} test frames flagged; mIoU "
           f"flagged {fmt(review['miou_flagged'])} vs unflagged {fmt(review['miou_unflagged'])}.")
    if review.get("top20"):
        t = review["top20"]
        msg += (f" The {t['n']} most uncertain frames score mIoU {fmt(t['miou_top20_uncertain'])} against "
                f"{fmt(t['miou_rest'])} for the rest.")
    st.markdown(msg)
card = scorecard_rows(compare)
with st.container(key="cmp_scorecard"):
    st.subheader("Uncertainty scorecard")
    if not card:
        st.info("This comparison has no uncertainty scorecard yet. Add one from the fitted methods, without "
                "retraining: `python -m engine scorecard --compare JSON --data DATA --run RUN --pool POOL`.")
    else:
        first = next(v for v in metrics.values() if v.get("uncertainty_scorecard"))["uncertainty_scorecard"]["review"]
        st.caption(f"Review flag for every method: the score above which {first['percent_flagged_typical']:g} % of "
                   f"typical frames lie ({first['typical_source']}). **ECE**: how far the pixels' stated confidence "
                   "is from their accuracy (0 = honest). **Review AUROC**: how well the score ranks the frames whose "
                   "mIoU is below the test median (1 = perfectly, 0.5 = chance). **AURC**: area under the "
                   "risk–coverage curve, lower is better. **Unfamiliar-input AUROC**: how well the method's own score "
                   "tells the unfamiliar-input set from the test frames.")
        sc = pd.DataFrame(card)
        st.dataframe(sc, hide_index=True, width="stretch",
                     column_config={**{c: st.column_config.NumberColumn(format="%.3f") for c in sc.columns
                                       if c not in ("method", "per-frame score", "test frames flagged", "temperature")},
                                    "temperature": st.column_config.NumberColumn(format="%.2f"),
                                    "test frames flagged": st.column_config.NumberColumn(format="percent")})
        fam = (compare.get("uncertainty") or {}).get("familiarity") or {}
        if fam.get("available"):
            st.markdown(f"**Unfamiliar inputs (DDPM familiarity check):** AUROC "
                        f"{fmt(fam['auroc_unfamiliar_vs_test'])} for {fam['n_unfamiliar']} unfamiliar images against "
                        f"{fam['n_test']} test frames; it flags {fam['unfamiliar_flagged_share']:.0%} of the "
                        f"unfamiliar images, {fam['test_flagged_share']:.0%} of the test frames and "
                        f"{fam['mild_flagged_share']:.0%} of mildly shifted frames (slight blur, JPEG, brightness).")
            kinds = pd.DataFrame([{"kind": k, "group": v["group"], "flagged": v["flagged_share"],
                                   "median percentile": v["median_percentile"]} for k, v in fam["by_kind"].items()])
            with st.expander("Familiarity check per kind of input"):
                st.dataframe(kinds, hide_index=True, width="stretch",
                             column_config={"flagged": st.column_config.NumberColumn(format="percent"),
                                            "median percentile": st.column_config.NumberColumn(format="%.1f")})
        elif fam:
            st.caption(f"DDPM familiarity check not available: {fam.get('why')}")
        g1, g2 = st.columns(2)
        rel = pd.DataFrame(reliability_points(compare))
        if len(rel):
            fig = px.line(rel, x="confidence", y="accuracy", color="method", line_dash="stage", markers=True,
                          hover_data=["pixels"], range_x=[0, 1], range_y=[0, 1], title="Reliability diagram (pixels)")
            fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line={"dash": "dot", "color": "grey"})
            fig.update_layout(height=400, margin={"t": 40, "b": 10})
            g1.plotly_chart(fig, width="stretch")
        rc = pd.DataFrame(risk_coverage_points(compare))
        if len(rc):
            fig = px.line(rc, x="share of frames kept", y="mIoU of kept frames", color="method",
                          title="Risk–coverage: set aside the most uncertain frames")
            fig.update_layout(height=400, margin={"t": 40, "b": 10})
            g2.plotly_chart(fig, width="stretch")

k_png = ws.compare.with_name(ws.compare.stem + "_conddiff_k.png")
if k_png.is_file():
    with st.expander("Conditional diffusion: more samples K → a steadier mIoU"):
        st.image(str(k_png), width="stretch")

st.subheader("Test frames")
if ws.data is None:
    st.stop()
ds = state.load_dataset(ws)
run = state.load_run(ws)
size = int(compare.get("image_size") or (run.image_size if run else 64))
methods = state.load_compared_methods(ws, size)
test = ds.stems("test")
chosen = st.multiselect("Frames", test, default=test[:2], max_selections=6, key="cmp_frames")
if not chosen:
    st.stop()
if not methods:
    st.info("The fitted methods behind this report are not on this machine; the figure `compare` wrote "
            "is shown instead.")
    fig_png = ws.compare.with_suffix(".png")
    if fig_png.is_file():
        st.image(str(fig_png), width="stretch")
    st.stop()
names = list(methods)
labels = ["frame", "truth", *names] + [f"{n} uncertainty" for n in names if n == "conddiff"]
panels = []
with st.spinner(f"Predicting {len(chosen)} frame(s) with {len(names)} methods…"):
    for stem in chosen:
        img, truth = explore.frame_and_truth(ds, stem, size)
        row = [img, overlay(img, truth, ds.classes, 0.6) if truth is not None else img]
        outs = {n: state.method_prediction(ws, size, n, str(ws.data), stem) for n in names}
        row += [overlay(img, outs[n]["labels"], ds.classes, 0.6) for n in names]
        row += [heatmap(outs[n]["variance"], vmax=max(float(outs[n]["variance"].max()), 1e-6))
                for n in names if n == "conddiff"]
        panels.append(row)
cols = st.columns(len(labels))
for c, lab in zip(cols, labels):
    c.markdown(f"**{lab}**")
for stem, row in zip(chosen, panels):
    cols = st.columns(len(labels))
    for c, im in zip(cols, row):
        c.image(im, width="stretch")
st.markdown(state.legend_html(ds.classes), unsafe_allow_html=True)
figure = make_grid(np.stack([im for row in panels for im in row]), ncol=len(labels))
st.download_button("Export figure (PNG)", png_bytes(figure), file_name="compare_frames.png", mime="image/png",
                   key="cmp_png")
