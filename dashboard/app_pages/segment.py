"""Segment: upload frames (or pick an example), see masks, uncertainty and areas, download outputs."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import state
from engine.app import review_log
from engine.data.images import ImageError
from engine.outputs.render import class_areas, heatmap, overlay
from engine.outputs.segment_outputs import FrameResult, png_bytes
from engine.app.segment_session import (colour_bar, outputs_zip, segment_frame, segment_frame_conddiff, shrink,
                                    uncertainty_rgb, uncertainty_scale, upload_error)
from engine.uncertainty.frame_scores import REVIEW_SCORE_MEANING, UNCALIBRATED_THRESHOLD
from engine.uncertainty.review import ReviewCalibration, review_decision

ws = state.workspace()
st.title("Segment")
st.caption("Upload one or many frames (PNG / JPEG / TIFF, any size, gray / RGB / RGBA / 16-bit) or pick an example.")
state.demo_notice(ws)
if not state.need(ws, "classifier"):
    st.stop()
clf = state.load_classifier(ws)
work = clf.run.image_size
st.caption(f":material/photo_size_select_large: Working resolution: each frame's shorter side is resized to **{work} px** "
           f"(the model's size) and the mask is mapped back to the frame's own size, so on a 1920×1080 frame one "
           f"model pixel covers about {1080 / work:.0f}×{1080 / work:.0f} frame pixels: edges look blocky on large frames.")
familiarity = state.load_familiarity(clf.run)  # (model or None, why not): one per run, shared read-only
review_calib = ReviewCalibration.from_dict(clf.review)

# Each session's frames live only in its own session_state (never in a shared cache).
results: dict[str, FrameResult] = st.session_state.setdefault("seg_results", {})
errors: dict[str, str] = st.session_state.setdefault("seg_errors", {})

src_col, opt_col = st.columns([2, 1])
with src_col:
    uploads = st.file_uploader("Frames", type=["png", "jpg", "jpeg", "tif", "tiff"], accept_multiple_files=True,
                               key="seg_upload")
    examples = {p.name: p for p in ws.examples}
    if not examples and ws.data is not None:  # fall back to a few test frames of the data set
        ds = state.load_dataset(ws)
        examples = {ds.image_path(s).name: ds.image_path(s) for s in ds.stems("test")[:4]}
    ex_choice = st.selectbox("…or a bundled example", ["(none)", *examples], key="seg_example")
    picked_new = ex_choice != "(none)" and st.session_state.get("seg_last_example") != ex_choice
    st.session_state["seg_last_example"] = ex_choice
with opt_col:
    opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="seg_opacity")
    contours = st.toggle("Contours", value=False, key="seg_contours")
    review_pct: int | None
    if review_calib is not None:
        review_pct = st.slider("Flag for review: about this share of typical frames", 1, 50, 10, 1, format="%d %%",
                               key="seg_review_pct",
                               help="A frame is flagged when its uncertainty is higher than on all but this share "
                                    "of typical frames (unlabelled frames like the training ones; "
                                    f"{review_calib.source}). The same rule holds for every method.")
        threshold = review_calib.threshold(review_pct)
    else:
        review_pct = None
        st.caption("The review flag is not calibrated for this classifier: run `python -m engine calibrate "
                   "--classifier CLF --data DATA --pool POOL` to flag a known share of typical frames.")
        threshold = st.slider("Review if uncertainty score above (uncalibrated)", 0.0, 1.5, UNCALIBRATED_THRESHOLD, 0.01,
                              key="seg_threshold")
    use_cd, cd_k = False, 5
    if ws.conddiff is not None:
        use_cd = st.toggle("Conditional diffusion too", value=False, key="seg_cd",
                           help="Also sample masks with the conditional diffusion model: mean of K samples, "
                                "with variance and entropy maps (about a second per sample on a CPU).")
        cd_k = st.slider("Samples K", 1, 10, 5, key="seg_cd_k", disabled=not use_cd)

sources: list[tuple[str, bytes]] = [(u.name, u.getvalue()) for u in (uploads or [])]
if ex_choice != "(none)":
    sources.append((ex_choice, examples[ex_choice].read_bytes()))

active, data_of = [], {}
for name, data in sources:
    key = f"{name}|{hashlib.sha1(data).hexdigest()[:16]}|{ws.classifier}"
    if key not in results and key not in errors:
        try:
            with st.spinner(f"Segmenting {name}…"):
                results[key] = segment_frame(clf, data, name, familiarity)
        except ImageError as e:
            errors[key] = str(e)
        except Exception as e:  # noqa: BLE001 - one upload must never break the page for the others
            errors[key] = upload_error(name, e)
    active.append(key)
    data_of[key] = (name, data)

for key in active:
    if key in errors:
        st.error(errors[key])
good_keys = [k for k in active if k in results]
good = [results[k] for k in good_keys]
if not good:
    st.info("Upload a frame or pick an example to segment it.")
    st.stop()

st.markdown(state.legend_html(clf.classes), unsafe_allow_html=True)
def looks(r) -> str:
    f = r.familiarity
    return "not checked" if f is None or not f.available else {"unfamiliar": "UNLIKE training frames",
                                                               "unusual": "somewhat unusual"}.get(f.level, "like training")


summary = pd.DataFrame([{"frame": r.name, "size": f"{r.image.shape[1]}×{r.image.shape[0]}", "input": looks(r),
                         "uncertainty": r.score, "review": "please check" if r.score > threshold else "confident"}
                        for r in good])
if len(good) > 1:
    st.dataframe(summary, hide_index=True, width="stretch",
                 column_config={"uncertainty": st.column_config.NumberColumn(format="%.3f")})
names = [r.name for r in good]
if picked_new and ex_choice in names:  # a newly picked example becomes the frame shown
    st.session_state["seg_pick"] = names.index(ex_choice)
if st.session_state.get("seg_pick", 0) >= len(good):
    st.session_state["seg_pick"] = 0
pick = st.selectbox("Frame", range(len(good)), format_func=lambda i: names[i], key="seg_pick") if len(good) > 1 else 0
r = good[pick]

# 1. is this the kind of frame the model knows? (before any mask is trusted)
fam = r.familiarity
with st.container(key="seg_familiarity"):
    if fam is None or not fam.available:
        st.info(fam.message if fam is not None else "Unfamiliar-input check not available.")
    elif fam.unfamiliar:
        head, _, rest = fam.message.partition(": ")
        st.error(f"**{head}.** {rest[:1].upper()}{rest[1:]}", icon=":material/report:")
    elif fam.level == "unusual":
        st.warning(fam.message)
    else:
        st.success(fam.message)
# 2. should a person check this mask?
flag = r.score > threshold
review_verdict = review_decision(r.score, review_calib, review_pct) if review_pct is not None else None
with st.container(key="seg_review"):
    if review_verdict is not None:
        (st.warning if flag else st.success)(("**Model unsure — please check.** " if flag else "**Confident.** ")
                                             + review_verdict["message"].split(". ", 1)[1])
    else:
        (st.warning if flag else st.success)(
            f"{'**Model unsure — please check.**' if flag else '**Confident.**'} Uncertainty score {r.score:.3f} "
            f"({'above' if flag else 'at or below'} the uncalibrated threshold {threshold:.2f}).")
    st.caption(f"What the score means: {REVIEW_SCORE_MEANING} — 0 when the model is sure everywhere. It does "
               "not see whether the frame is of the right kind; the check above does."
               + (f" Calibrated probabilities (temperature {clf.temperature:.2f})." if clf.temperature != 1.0 else ""))
shown = overlay(shrink(r.image), shrink(r.labels, nearest=True), clf.classes, opacity, contours)
c1, c2, c3 = st.columns(3)
c1.image(shrink(r.image), caption=f"{r.name} ({r.image.shape[1]}×{r.image.shape[0]})", width="stretch")
c2.image(shown, caption="prediction overlay", width="stretch")
c3.image(shrink(uncertainty_rgb(r)), caption="uncertainty: where the ensemble members disagree (dark = they agree)",
         width="stretch")
c3.image(colour_bar(uncertainty_scale(r), height=10, labelled=False), width="stretch")
c3.caption(f"0 = members agree → {uncertainty_scale(r):.2f} = members disagree most")

areas = pd.DataFrame(class_areas(r.labels, clf.classes))
a1, a2 = st.columns([3, 2])
fig = px.bar(areas, x="share", y="class", orientation="h", color="class", text_auto=".1%",
             color_discrete_map={c.name: f"rgb{tuple(c.color)}" for c in clf.classes},
             title=f"Class areas in {r.name}", category_orders={"class": clf.classes.names})
fig.update_layout(showlegend=False, height=60 + 34 * len(areas), margin={"t": 40, "b": 10, "l": 10},
                  xaxis_tickformat=".0%", xaxis_range=[0, 1])
a1.plotly_chart(fig, width="stretch", config=state.plotly_config("class_areas"), key="seg_areas")
a2.dataframe(areas, hide_index=True, width="stretch",
             column_config={"share": st.column_config.NumberColumn("share", format="percent")})

d1, d2, d3 = st.columns(3)
d1.download_button("Mask (indexed PNG)", png_bytes(r.labels, clf.classes.colors), file_name=f"{r.stem}_mask.png",
                   mime="image/png", key="dl_mask")
d2.download_button("labelmap.txt", clf.classes.labelmap_txt(), file_name="labelmap.txt", mime="text/plain",
                   key="dl_labelmap")
d3.download_button(f"ZIP of all outputs ({len(good)} frame{'s' * (len(good) > 1)})",
                   outputs_zip(good, clf, opacity, threshold, contours), file_name="diffseg-outputs.zip",
                   mime="application/zip", key="dl_zip")

if use_cd:
    st.subheader(f"Conditional diffusion · K = {cd_k} samples")
    cd_results: dict[tuple[str, int], FrameResult] = st.session_state.setdefault("seg_cd_results", {})
    ckey = (good_keys[pick], int(cd_k))
    cd_model = state.load_conddiff(ws)
    if cd_model.ctx.classes.names != clf.classes.names:
        st.warning(f"The conditional diffusion model in `{ws.conddiff}` was fitted for classes "
                   f"{cd_model.ctx.classes.names}, not this classifier's {clf.classes.names}; not used.")
        st.stop()
    if ckey not in cd_results:
        name, data = data_of[good_keys[pick]]
        try:
            with st.spinner(f"Sampling {cd_k} masks for {name}…"):
                cd_results[ckey] = segment_frame_conddiff(cd_model, data, name, k=int(cd_k))
        except Exception as e:  # noqa: BLE001 - same rule as the classifier above
            st.error(upload_error(name, e))
            st.stop()
    cd = cd_results[ckey]
    agree = float((cd.labels == r.labels).mean())
    from engine.uncertainty.method_review import for_samples

    cd_calib = for_samples(cd_model.review_calibrations, int(cd_k))
    if cd_calib is not None and review_pct is not None:
        cd_flag = cd.score > cd_calib.threshold(review_pct)
        cd_msg = (f"its sample spread is higher than on {cd_calib.percentile(cd.score):.0f} % of typical frames "
                  f"(flagged above the top {review_pct} %)")
    else:
        cd_flag = cd.review
        cd_msg = f"sample-spread score {cd.score:.4f} (review flag not calibrated for K = {cd_k})"
    (st.warning if cd_flag else st.success)(
        f"{'**Model unsure — please check.**' if cd_flag else '**Confident.**'} Conditional diffusion: {cd_msg}; "
        f"agrees with the pixel classifier on {agree:.1%} of pixels.")
    e1, e2, e3 = st.columns(3)
    e1.image(overlay(shrink(r.image), shrink(cd.labels, nearest=True), clf.classes, opacity, contours),
             caption=f"mean of {cd.samples} sampled masks", width="stretch")
    vmax_v = max(float(cd.variance.max()), 1e-6)
    e2.image(shrink(heatmap(cd.variance, vmax=vmax_v)), caption="variance across samples (dark = samples agree)",
             width="stretch")
    e2.image(colour_bar(vmax_v, height=10, labelled=False), width="stretch")
    e2.caption(f"0 = samples agree → {vmax_v:.3f} = samples differ most")
    vmax_e = max(float(cd.entropy.max()), 1e-6)
    e3.image(shrink(heatmap(cd.entropy, vmax=vmax_e)), caption="how mixed the mean mask's classes are (dark = one class)",
             width="stretch")
    e3.image(colour_bar(vmax_e, height=10, labelled=False), width="stretch")
    e3.caption(f"0 = one class → {vmax_e:.2f} = classes most mixed")
    st.download_button("Conditional-diffusion mask (indexed PNG)", png_bytes(cd.labels, clf.classes.colors),
                       file_name=f"{r.stem}_conddiff_k{cd.samples}_mask.png", mime="image/png", key="dl_cd_mask")

# ---- review: accept / reject / needs correction, kept in the workspace's review log ---------------------
st.subheader("Review")
public = state.policy().public
log_file = review_log.log_path(ws.out_dir)
entries = st.session_state.setdefault("seg_review_public", {}) if public else review_log.read_log(log_file)
current = entries.get(r.name)
st.caption((f"Current decision for **{r.name}**: {current.decision}" + (f" — {current.note}" if current.note else "")
            if current else f"No decision for **{r.name}** yet.") +
           ("" if public else f" The log is kept in `{log_file}`."))
with st.form("seg_review_form", clear_on_submit=True, enter_to_submit=False):
    v1, v2 = st.columns([1, 2])
    verdict_choice = str(v1.radio("Decision", review_log.DECISIONS, key="seg_review_decision", horizontal=False))
    note = v2.text_area("Note", key="seg_review_note", placeholder="what is wrong, what to fix", height=100)
    saved = st.form_submit_button("Save review", type="primary")
if saved:
    if public:
        entries[r.name] = review_log.ReviewEntry(r.name, verdict_choice, note.strip(),
                                                 classifier=ws.classifier.name if ws.classifier else "",
                                                 uncertainty=f"{r.score:.5f}")
    else:
        review_log.record(log_file, r.name, verdict_choice, note, classifier=str(ws.classifier), uncertainty=r.score)
    st.toast(f"{r.name}: {verdict_choice}")
    st.rerun()
if entries:
    st.dataframe(pd.DataFrame([vars(e) for e in entries.values()]), hide_index=True, width="stretch",
                 key="seg_review_table")
    st.download_button("Review log (CSV)", review_log.to_csv(entries), file_name="review_log.csv", mime="text/csv",
                       key="dl_review")
    label_page = Path(__file__).with_name("label.py")
    stems = set()
    if ws.data is not None:
        lds = state.load_dataset(ws)
        stems = {s for split in ("train", "test", "unlabeled") for s in lds.stems(split)}
    needs = [f for f, e in entries.items() if e.decision != "accept" and f.rsplit(".", 1)[0] in stems]
    if label_page.is_file() and any(e.decision != "accept" for e in entries.values()) and not needs:
        st.caption("Frames to correct that are not in the workspace's data set can be labelled after "
                   "`python -m engine data import-frames`; data-set frames open on the Label page from here.")
    if label_page.is_file() and needs:
        fix = st.selectbox("Frame to correct", needs, key="seg_review_fix")
        if st.button("Open on the Label page", key="seg_open_label", icon=":material/edit:"):
            st.session_state["label_frame"] = fix.rsplit(".", 1)[0]
            st.switch_page("app_pages/label.py")
