"""Overview: data set, model run, latest results."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import state
from engine import workspace as wsmod
from engine.bootstrap import format_interval
from engine.compare_report import method_results


def format_ci(ci: dict | None) -> str:
    return format_interval(ci).split(" ", 1)[1] if ci else "–"


ws = state.workspace()
st.title("DiffSeg Studio")
st.caption("Label-efficient segmentation of cataract-surgery frames from the activations of a diffusion model.")

col_data, col_run = st.columns(2)
with col_data:
    st.subheader("Data set")
    if state.need(ws, "data"):
        summary = state.dataset_summary(str(ws.data), state._mtime(ws.data, "classes.json"))
        c1, c2, c3 = st.columns(3)
        c1.metric("Train (labelled)", summary["splits"]["train"])
        c2.metric("Test (labelled)", summary["splits"]["test"])
        c3.metric("Unlabelled pool", summary["splits"]["unlabeled"])
        ds = state.load_dataset(ws)
        st.markdown(state.legend_html(ds.classes), unsafe_allow_html=True)
        df = pd.DataFrame(summary["classes"])
        fig = px.bar(df, x="name", y="pixel_share", color="name",
                     color_discrete_map={c["name"]: f"rgb{tuple(c['color'])}" for c in summary["classes"]},
                     labels={"name": "class", "pixel_share": "pixel share"}, title="Pixel share per class")
        fig.update_layout(showlegend=False, height=300, yaxis_tickformat=".0%", margin={"t": 40, "b": 10})
        st.plotly_chart(fig, width="stretch")
        st.caption(f"`{ws.data}`")

with col_run:
    st.subheader("Model run")
    if state.need(ws, "run"):
        meta = wsmod.read_json(ws.run / "config.json") or {}
        unet = meta.get("unet", {})
        c1, c2, c3 = st.columns(3)
        c1.metric("Preset", meta.get("preset", "?"))
        c2.metric("Steps trained", meta.get("step", "?"))
        c3.metric("Image size", f"{unet.get('image_size', '?')} px")
        loss = pd.DataFrame(wsmod.read_loss(ws.run))
        if len(loss):
            fig = px.line(loss, x="step", y="loss", log_y=True, title="Training loss")
            fig.update_layout(height=300, margin={"t": 40, "b": 10})
            st.plotly_chart(fig, width="stretch")
        else:
            st.info("No training log (loss.jsonl) in this run.")
        st.caption(f"`{ws.run}` · diffusion T={meta.get('diffusion', {}).get('num_timesteps', '?')}")

st.subheader("Latest results")
rows = []
clf_meta = wsmod.read_json(ws.classifier / "config.json") if ws.classifier else None
if clf_meta:
    spec = clf_meta.get("spec", {})
    rows.append({"result": "classifier", "method": "ddpm (pixel MLP ensemble)",
                 "timesteps": ",".join(map(str, spec.get("steps", []))),
                 "blocks": ",".join(map(str, spec.get("blocks", []))),
                 "mIoU": (wsmod.read_json(ws.metrics) or {}).get("miou", clf_meta.get("stats", {}).get("test_miou")),
                 "95 % CI (test frames)": format_ci((wsmod.read_json(ws.metrics) or {}).get("miou_ci95")),
                 "how chosen / scored": ("recipe chosen by cross-validation on train frames"
                                         if clf_meta.get("stats", {}).get("recipe_search") else "recipe set by hand")})
sweep = wsmod.read_json(ws.sweep)
if sweep:
    best = sweep.get("best", {})
    rows.append({"result": "sweep best cell", "method": "single block", "timesteps": str(best.get("step")),
                 "blocks": str(best.get("block")), "mIoU": best.get("miou"),
                 "95 % CI (test frames)": "–",
                 "how chosen / scored": "scored by " + sweep.get("scored_on", "test frames")})
compare = wsmod.read_json(ws.compare)
for method, m in method_results(compare).items():
    cfg = m.get("config") or {}
    rows.append({"result": f"compare ({compare.get('budget', '?')})", "method": method,
                 "timesteps": ",".join(map(str, cfg.get("steps", []))) if method.startswith("ddpm") else "",
                 "blocks": "", "mIoU": m["miou"], "95 % CI (test frames)": format_ci(m.get("miou_ci95")),
                 "how chosen / scored": "test frames, same for every method"})
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={"mIoU": st.column_config.NumberColumn(format="%.3f")})
else:
    st.info("No results yet: fit a classifier, run a sweep or a comparison on the **Train** page.")
