"""Overview: what this workspace is, the headline result, what to do first, data set, run, results, report."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import state
from engine.app import workspace as wsmod
from engine.scoring.bootstrap import format_interval
from engine.methods.base import method_title
from engine.methods.compare_report import headline, method_provenance, method_results


def format_ci(ci: dict | None) -> str:
    return format_interval(ci).split(" ", 1)[1] if ci else "–"


ws = state.workspace()
st.title("DiffSeg Studio")
st.caption("Label-efficient segmentation of cataract-surgery frames from the activations of a diffusion model.")
state.demo_notice(ws)

compare = wsmod.read_json(ws.compare)
head = headline(compare)
if head:
    st.markdown(f"<div data-testid='headline' style='font-size:1.2rem;padding:.6rem 1rem;border-left:4px solid "
                f"#0072b2;background:rgba(0,114,178,.07);margin-bottom:.6rem'><b>Headline.</b> {head['text']}</div>",
                unsafe_allow_html=True)
with st.expander("**What to do first**", expanded=head is None or not state.is_embedded_demo(ws)):
    st.markdown(
        "1. **Segment** — upload a frame (or pick an example) and review the mask; accept / reject it in the review log.\n"
        "2. **Compare** — see which method wins on the test frames and export the figure.\n"
        "3. **Activations** → **Tune** — click a cell of the block × timestep heat map, open it in Tune, try other "
        "timesteps / blocks with the instant preview, then save the full classifier.\n"
        "4. Your own data: **Train** pretrains a run and fits a classifier as background jobs; use them in one click.\n"
        "5. Send a supervisor the **report** below: one HTML file that opens offline.")

col_data, col_run = st.columns(2)
run_meta: dict = (wsmod.read_json(ws.run / "config.json") if ws.run else None) or {}
with col_data:
    st.subheader("Data set")
    if state.need(ws, "data"):
        summary = state.dataset_summary(str(ws.data), state._mtime(ws.data, "classes.json"))
        c1, c2 = st.columns(2)
        c1.metric("Labelled train frames", summary["splits"]["train"])
        c2.metric("Labelled test frames", summary["splits"]["test"])
        pool = (run_meta or {}).get("pool_size")
        c3, c4 = st.columns(2)
        c3.metric("Pretraining pool", f"{pool:,}" if pool else "?",
                  help="Unlabelled frames the diffusion model was pretrained on, from the run's config.json")
        c4.metric("Unlabelled in this folder", summary["splits"]["unlabeled"])
        if pool:
            st.caption(f"Pretrained on {pool:,} unlabelled frames ({run_meta.get('pool', '?')} split of "
                       f"`{run_meta.get('data', '?')}`); this data folder ships only the labelled frames.")
        ds = state.load_dataset(ws)
        st.markdown(state.legend_html(ds.classes), unsafe_allow_html=True)
        df = pd.DataFrame(summary["classes"])
        fig = px.bar(df, x="name", y="pixel_share", color="name", text_auto=".0%",
                     color_discrete_map={c["name"]: f"rgb{tuple(c['color'])}" for c in summary["classes"]},
                     labels={"name": "class", "pixel_share": "pixel share"}, title="Pixel share per class")
        fig.update_layout(showlegend=False, height=300, yaxis_tickformat=".0%", margin={"t": 40, "b": 10})
        st.plotly_chart(fig, width="stretch", config=state.plotly_config("pixel_share"))
        st.caption(f"`{ws.data}`")

with col_run:
    st.subheader("Model run")
    if state.need(ws, "run"):
        meta = run_meta or {}
        unet = meta.get("unet", {})
        c1, c2, c3 = st.columns(3)
        c1.metric("Preset", meta.get("preset", "?"))
        c2.metric("Steps trained", meta.get("step", "?"))
        c3.metric("Image size", f"{unet.get('image_size', '?')} px")
        loss = pd.DataFrame(wsmod.read_loss(ws.run) if ws.run else [])
        if len(loss):
            fig = px.line(loss, x="step", y="loss", log_y=True, title="Training loss")
            fig.update_layout(height=300, margin={"t": 40, "b": 10})
            st.plotly_chart(fig, width="stretch", config=state.plotly_config("training_loss"))
        else:
            st.info("No training log (loss.jsonl) in this run.")
        st.caption(f"`{ws.run}` · diffusion T={meta.get('diffusion', {}).get('num_timesteps', '?')}")

st.subheader("Latest results")
st.caption("Scores of the same kind of model differ when they were fitted or scored differently: each row says how.")
rows = []
clf_meta = wsmod.read_json(ws.classifier / "config.json") if ws.classifier else None
if clf_meta:
    spec, fit = clf_meta.get("spec", {}), clf_meta.get("fit", {})
    metrics = wsmod.read_json(ws.metrics) or {}
    chosen = clf_meta.get("stats", {}).get("recipe_search")
    rows.append({"result": "workspace classifier", "method": "ddpm (pixel MLP ensemble)",
                 "recipe": f"t={','.join(map(str, spec.get('steps', [])))} · blocks {','.join(map(str, spec.get('blocks', [])))}"
                           + (f" · {spec['n_noise']} noises" if spec.get("n_noise", 1) > 1 else "")
                           + (f" · RGB {spec['rgb_window']}×{spec['rgb_window']}" if spec.get("rgb_window") else "")
                           + (" · flip averaging" if fit.get("flip_tta") else "")
                           + (f" · self-training on {fit['self_train']} frames" if fit.get("self_train") else "")
                           + (f" · {fit['augment']} augmented copies per frame" if fit.get("augment") else ""),
                 "how chosen": (f"{chosen.get('folds', '?')}-fold CV on train frames (fit --recipe auto)" if chosen
                                else "set by hand"),
                 "fit": f"{fit.get('members', '?')} members × ≤{fit.get('max_epochs', '?')} epochs",
                 "scored on": f"{metrics['n_images']} test frames" if metrics.get("n_images") else "not scored yet",
                 "mIoU": metrics.get("miou", clf_meta.get("stats", {}).get("test_miou")),
                 "95 % CI": format_ci(metrics.get("miou_ci95"))})
sweep = wsmod.read_json(ws.sweep)
if sweep:
    best, fit = sweep.get("best", {}), sweep.get("fit", {})
    rows.append({"result": "sweep best cell", "method": "ddpm, one block at one t",
                 "recipe": f"t={best.get('step')} · block {best.get('block')}", "how chosen": "best cell of the grid",
                 "fit": f"{fit.get('members', '?')} members × ≤{fit.get('max_epochs', '?')} epochs, "
                        f"≤{fit.get('max_pixels', 0):,} px",
                 "scored on": sweep.get("scored_on", f"first {sweep.get('n_test', '?')} test frames"),
                 "mIoU": best.get("miou"), "95 % CI": "–"})
for method, m in method_results(compare).items():
    cfg = m.get("config") or {}
    recipe = (f"t={','.join(map(str, cfg.get('steps', [])))} · blocks "
              f"{','.join(map(str, cfg['blocks'])) if cfg.get('blocks') else 'run default'}"
              if method.startswith("ddpm") else method_title(method))  # its own network: say which
    seeds = m.get("seeds")
    rows.append({"result": f"compare ({compare.get('budget', '?')})", "method": method, "recipe": recipe,
                 "how chosen": "the method's budget config",
                 "fit": (method_provenance(method, m, compare).split(" · compare")[0]
                         if method.startswith("ddpm") else f"{cfg['steps']} training steps" if "steps" in cfg
                         else f"{cfg['n_samples']} generated frames" if "n_samples" in cfg else "its budget's config")
                 + (f" · {seeds['n']} seeds: {seeds['mean']:.3f} ± {seeds['sd']:.3f}"
                    if seeds and seeds.get("n", 0) > 1 else ""),
                 "scored on": f"{m.get('n_test') or compare.get('n_test', '?')} test frames", "mIoU": m["miou"],
                 "95 % CI": format_ci(m.get("miou_ci95"))})
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={"mIoU": st.column_config.NumberColumn(format="%.3f")})
else:
    st.info("No results yet: fit a classifier, run a sweep or a comparison on the **Train** page.")

st.subheader("Report for a supervisor")
st.caption("One self-contained HTML file (charts and images inside; opens offline): data set, run, classifier, "
           "sweep, comparison and scorecard, example masks, and the commands that reproduce every number. "
           "Same as `python -m engine report --workspace … --out report.html`.")


def _report() -> str:
    from engine.outputs.report import build_report

    return build_report(ws, classifier=state.load_classifier(ws))


st.download_button("Download report (HTML)", data=_report, file_name="diffseg-report.html", mime="text/html",
                   key="ov_report", icon=":material/description:", type="primary")
