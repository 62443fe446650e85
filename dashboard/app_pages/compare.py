"""Compare: headline, methods side by side (metrics, per-class IoU, test frames), publication figure exports."""
from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from dashboard import state
from engine.app import access, explore, jobs, workspace as wsmod
from engine.methods.base import default_methods
from engine.methods.compare_report import display_rows, headline, k_study_rows, method_provenance, method_results
from engine.outputs.figures import ColourBar, PanelFigure, frame_iou, legend_of, render_pdf, render_png, render_svg
from engine.outputs.palette import method_colour_map
from engine.methods.compare_stats import label_curve_path, stats_rows
from engine.outputs.render import heatmap, overlay
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
    if ws.run is not None and ws.data is not None and not state.policy().public:
        methods = st.multiselect("Methods", default_methods(),
                                 default=["ddpm", "unet"], key="cmp_methods")
        if st.button("Run compare as a job", type="primary", key="cmp_start", disabled=not methods):
            try:
                out = state.policy().check(ws.out_dir / "results" / "compare.json", "Compare JSON", write=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                job = jobs.start_exclusive(ws.jobs_dir, "compare", [
                    "compare", "--data", str(ws.data), "--run", str(ws.run), "--methods", ",".join(methods),
                    "--json", str(out)], cwd=wsmod.REPO_ROOT)
                st.success(f"Started job `{job['id']}`; this page shows `{out}` once it is written.")
            except (access.PathRefused, jobs.JobConflict) as e:
                st.error(str(e), icon=":material/block:")
    st.stop()

head = headline(compare)
if head:
    st.markdown(f"<div data-testid='headline' style='font-size:1.2rem;padding:.6rem 1rem;border-left:4px solid "
                f"#0072b2;background:rgba(0,114,178,.07);margin-bottom:.6rem'><b>Headline.</b> {head['text']}</div>",
                unsafe_allow_html=True)
st.caption(f"{compare.get('n_test', '?')} test frames, {compare.get('n_train', '?')} labelled train frames, "
           f"{compare.get('image_size', '?')} px, budget `{compare.get('budget', '?')}`; unlabelled pool: "
           f"{compare.get('pool_size', '?')} images from {compare.get('pool_source', '?')}. Source: `{ws.compare}`")
table = pd.DataFrame(display_rows(compare)).sort_values("mIoU", ascending=False)
st.subheader("Metrics")
num = [c for c in table.columns if c not in ("method", "Δ vs UNet", "scored on", "train s", "infer s / image")]
st.dataframe(table, hide_index=True, width="stretch",
             column_config={**{c: st.column_config.NumberColumn(format="%.3f") for c in num},
                            "train s": st.column_config.NumberColumn(format="%.0f"),
                            "infer s / image": st.column_config.NumberColumn(format="%.3f")})
with st.expander("How each score was measured"):
    st.markdown("\n".join(f"- **{n}**: {method_provenance(n, r, compare)}" for n, r in metrics.items())
                + f"\n\nAll rows: {compare.get('metric_convention', 'ignore-masked, absent classes skipped')}; "
                "the same test frames and metric code for every method.")
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
    # the reference row and single-seed spreads show a dash, not "None" or a spread of 0
    st.dataframe(pd.DataFrame(state.text_table(sdf.to_dict("records"), {"seeds": "d", "p vs ddpm": ".3g"})),
                 hide_index=True, width="stretch")

curve_path = label_curve_path(ws.compare)
curve = wsmod.read_json(curve_path) if curve_path else None
if curve and curve.get("curves"):
    st.subheader("Label-count curve")
    cfig = go.Figure()
    curve_colours = method_colour_map(curve["curves"])  # the same colour per method as every other chart
    for name, cur in curve["curves"].items():
        xs = [int(c) for c in cur]
        cfig.add_trace(go.Scatter(x=xs, y=[v["mean"] for v in cur.values()], mode="lines+markers", name=name,
                                  line={"color": curve_colours[name]},
                                  error_y={"type": "data", "array": [v["sd"] for v in cur.values()]}))
    counts = sorted({int(c) for cur in curve["curves"].values() for c in cur})
    cfig.update_layout(height=360, margin={"t": 30, "b": 10}, yaxis_title="test mIoU (mean ± sd)",
                       xaxis={"type": "log", "title": "labelled train frames", "tickvals": counts,
                              "ticktext": [str(c) for c in counts]})
    st.plotly_chart(cfig, width="stretch", key="cmp_curve")
    joined = "".join(f" {name}: counts {own['counts']}, seeds {own['seeds']} × {own['draws']} draw(s), so no sd "
                     "where one run." for name, own in (curve.get("runs_per_method") or {}).items())
    st.caption(f"mean ± sd over seeds {curve['seeds']} × up to {curve['draws']} random label draws, "
               f"{curve['n_test']} test frames, budget `{curve['budget']}`.{joined} Source: `{curve_path}`")

per_class = pd.DataFrame([{"method": m, "class": c, "IoU": iou} for m, v in metrics.items()
                          for c, iou in (v.get("per_class_iou") or {}).items()])
if len(per_class):
    fig = px.bar(per_class, x="class", y="IoU", color="method", barmode="group", range_y=[0, 1],
                 color_discrete_map=method_colour_map(metrics), title="Per-class IoU by method")
    fig.update_layout(height=380, margin={"t": 40, "b": 10})
    st.plotly_chart(fig, width="stretch", config=state.plotly_config("per_class_iou_by_method"))

cd_result = metrics.get("conddiff", {})
review = cd_result.get("review")
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
        st.dataframe(pd.DataFrame(state.text_table(card, {"test frames": "d", "temperature": ".2f",
                                                          "test frames flagged": "%"})),
                     hide_index=True, width="stretch")
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

k_rows = k_study_rows(cd_result)
if k_rows:
    with st.expander("Conditional diffusion: more samples K → a steadier mIoU"):
        n_frames = k_rows[0]["frames"]
        fig = go.Figure(go.Scatter(x=[r["K"] for r in k_rows], y=[r["mean"] for r in k_rows], mode="lines+markers",
                                   error_y={"type": "data", "array": [r["std"] for r in k_rows]},
                                   line={"color": method_colour_map(["conddiff"])["conddiff"]}))
        fig.update_layout(title=f"conddiff mIoU vs K samples (mean ± std over {k_rows[0]['seeds']} seeds, "
                                f"{n_frames} test frames)", xaxis_title="samples K", yaxis_title="mIoU",
                          height=340, margin={"t": 50, "b": 10})
        st.plotly_chart(fig, width="stretch", config=state.plotly_config("conddiff_k"), key="cmp_k")
        at_k = next((r["mean"] for r in k_rows if r["K"] == cd_result.get("config", {}).get("samples")),
                    k_rows[-1]["mean"])
        st.caption(f"Measured on only {n_frames} test frames, so its mIoU (e.g. {at_k:.3f} "
                   f"at the table's K) differs from the table's {cd_result['miou']:.3f} over all "
                   f"{compare.get('n_test', '?')} test frames.")

st.subheader("Test frames")
if ws.data is None:
    st.stop()
ds = state.load_dataset(ws)
run = state.load_run(ws)
size = int(compare.get("image_size") or (run.image_size if run else 64))
test = ds.stems("test")
chosen = st.multiselect("Frames", test, default=test[:2], max_selections=6, key="cmp_frames")
if not chosen:
    st.stop()
names = [n for n in metrics if n in state.method_fingerprints(ws)]
if not names:
    st.info("The fitted methods behind this report are not on this machine; the figure `compare` wrote "
            "is shown instead.")
    fig_png = ws.compare.with_suffix(".png") if ws.compare else None
    if fig_png is not None and fig_png.is_file():
        st.image(str(fig_png), width="stretch")
    st.stop()
panels: list[list] = []
notes: list[list[str]] = []
labels_row: list[str] = []
with st.spinner(f"Predicting {len(chosen)} frame(s) with {len(names)} methods…"):
    outs_all: dict[str, dict[str, Any]] = {
        stem: {n: state.method_prediction(ws, size, n, str(ws.data), stem) for n in names} for stem in chosen}
names = [n for n in names if all(outs_all[s][n] is not None for s in chosen)]
has_var = "conddiff" in names and all(outs_all[s]["conddiff"].get("variance") is not None for s in chosen)
labels = ["frame", "truth", *names] + (["conddiff uncertainty (variance)"] if has_var else [])
vmax = max((float(outs_all[s]["conddiff"]["variance"].max()) for s in chosen), default=1e-6) if has_var else 1.0
for stem in chosen:
    img, truth = explore.frame_and_truth(ds, stem, size)
    row = [img, overlay(img, truth, ds.classes, 0.6) if truth is not None else img]
    note = ["", ""]
    for n in names:
        lab = outs_all[stem][n]["labels"]
        row.append(overlay(img, lab, ds.classes, 0.6))
        note.append(f"IoU {frame_iou(lab, truth, ds.classes.num_classes):.3f}" if truth is not None else "")
    if has_var:
        row.append(heatmap(outs_all[stem]["conddiff"]["variance"], vmax=max(vmax, 1e-6)))
        note.append("")
    panels.append(row)
    notes.append(note)
per_row = 4
for stem, row, note in zip(chosen, panels, notes):
    st.markdown(f"**{stem}**")
    for start in range(0, len(row), per_row):
        cols = st.columns(per_row)
        for c, im, lab, nt in zip(cols, row[start:start + per_row], labels[start:start + per_row],
                                  note[start:start + per_row]):
            c.image(im, caption=f"{lab}" + (f" · {nt}" if nt else ""), width="stretch")
st.markdown(state.legend_html(ds.classes), unsafe_allow_html=True)
if has_var:
    st.caption(f"conddiff uncertainty: variance of its K sampled masks, dark = samples agree, bright = they disagree "
               f"(0…{vmax:.3f}, one scale for all frames).")

figure = PanelFigure(panels, labels, list(chosen), notes, legend_of(ds.classes.names, ds.classes.colors),
                     ColourBar("conddiff variance", 0.0, vmax, "agree", "disagree") if has_var else None,
                     title=f"Test frames: truth and {len(names)} methods (per-frame mIoU under each mask)")
st.caption("Figure export: every panel upscaled without blurring, column headers, frame names, per-frame IoU, class "
           "legend" + (" and colour bar" if has_var else "") + ". PNG at 300 dpi, PDF, or SVG (editable text).")
e1, e2, e3 = st.columns(3)
e1.download_button("Figure (PNG)", data=lambda: render_png(figure), file_name="compare_frames.png", mime="image/png",
                   key="cmp_png")
e2.download_button("Figure (PDF)", data=lambda: render_pdf(figure), file_name="compare_frames.pdf",
                   mime="application/pdf", key="cmp_pdf")
e3.download_button("Figure (SVG)", data=lambda: render_svg(figure), file_name="compare_frames.svg",
                   mime="image/svg+xml", key="cmp_svg")
