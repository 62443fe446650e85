"""Segment: upload frames (or pick an example), see masks, uncertainty and areas, download outputs."""
from __future__ import annotations

import hashlib

import pandas as pd
import streamlit as st

from dashboard import state
from engine.data.images import ImageError
from engine.render import class_areas, heatmap, overlay
from engine.segment_outputs import png_bytes
from engine.segment_session import (colour_bar, outputs_zip, segment_frame, segment_frame_conddiff, shrink,
                                    uncertainty_rgb, uncertainty_scale, upload_error)
from engine.uncertainty.review import ReviewCalibration, review_decision

ws = state.workspace()
st.title("Segment")
st.caption("Upload one or many frames (PNG / JPEG / TIFF, any size, gray / RGB / RGBA / 16-bit) or pick an example.")
if not state.need(ws, "classifier"):
    st.stop()
clf = state.load_classifier(ws)
familiarity = state.load_familiarity(clf.run)  # (model or None, why not): one per run, shared read-only
review_calib = ReviewCalibration.from_dict(clf.review)

# Each session's frames live only in its own session_state (never in a shared cache).
results: dict[str, object] = st.session_state.setdefault("seg_results", {})
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
with opt_col:
    opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="seg_opacity")
    contours = st.toggle("Contours", value=False, key="seg_contours")
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
        threshold = st.slider("Review if uncertainty score above (uncalibrated)", 0.0, 0.7, 0.15, 0.01,
                              key="seg_threshold")
    use_cd = cd_k = None
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
pick = st.selectbox("Frame", range(len(good)), format_func=lambda i: names[i], key="seg_pick") if len(good) > 1 else 0
r = good[pick]

# 1. is this the kind of frame the model knows? (before any mask is trusted)
fam = r.familiarity
with st.container(key="seg_familiarity"):
    if fam is None or not fam.available:
        st.info(fam.message if fam is not None else "Unfamiliar-input check not available.")
    elif fam.unfamiliar:
        st.error(f"**Unlike the training frames.** {fam.message}", icon=":material/report:")
    elif fam.level == "unusual":
        st.warning(fam.message)
    else:
        st.success(fam.message)
# 2. should a person check this mask?
flag = r.score > threshold
decision = review_decision(r.score, review_calib, review_pct) if review_pct is not None else None
with st.container(key="seg_review"):
    if decision is not None:
        (st.warning if flag else st.success)(("**Model unsure — please check.** " if flag else "**Confident.** ")
                                             + decision["message"].split(". ", 1)[1])
    else:
        (st.warning if flag else st.success)(
            f"{'**Model unsure — please check.**' if flag else '**Confident.**'} Uncertainty score {r.score:.3f} "
            f"({'above' if flag else 'at or below'} the uncalibrated threshold {threshold:.2f}).")
    st.caption("What the score means: how much the classifier's ensemble members disagree on the 10 % of pixels "
               "where they disagree most — 0 when they all agree. It does not see whether the frame is of the right "
               "kind; the check above does." + (f" Calibrated probabilities (temperature {clf.temperature:.2f})."
                                                  if clf.temperature != 1.0 else ""))
shown = overlay(shrink(r.image), shrink(r.labels, nearest=True), clf.classes, opacity, contours)
c1, c2, c3 = st.columns(3)
c1.image(shrink(r.image), caption=f"{r.name} ({r.image.shape[1]}×{r.image.shape[0]})", width="stretch")
c2.image(shown, caption="prediction overlay", width="stretch")
c3.image(shrink(uncertainty_rgb(r)), caption="uncertainty: where the ensemble members disagree (dark = they agree)",
         width="stretch")
c3.image(colour_bar(uncertainty_scale(r)), width="stretch")

areas = pd.DataFrame(class_areas(r.labels, clf.classes))
st.dataframe(areas, hide_index=True, width="stretch",
             column_config={"share": st.column_config.ProgressColumn("share", format="percent", min_value=0, max_value=1)})

d1, d2, d3 = st.columns(3)
d1.download_button("Mask (indexed PNG)", png_bytes(r.labels, clf.classes.colors), file_name=f"{r.stem}_mask.png",
                   mime="image/png", key="dl_mask")
d2.download_button("labelmap.txt", clf.classes.labelmap_txt(), file_name="labelmap.txt", mime="text/plain",
                   key="dl_labelmap")
d3.download_button(f"ZIP of all outputs ({len(good)} frame{'s' * (len(good) > 1)})",
                   outputs_zip(good, clf, opacity, threshold), file_name="diffseg-outputs.zip",
                   mime="application/zip", key="dl_zip")

if use_cd:
    st.subheader(f"Conditional diffusion · K = {cd_k} samples")
    cd_results: dict[tuple[str, int], object] = st.session_state.setdefault("seg_cd_results", {})
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
    e2.image(colour_bar(vmax_v, low="samples agree", high="samples differ"), width="stretch")
    vmax_e = max(float(cd.entropy.max()), 1e-6)
    e3.image(shrink(heatmap(cd.entropy, vmax=vmax_e)), caption="how mixed the mean mask's classes are (dark = one class)",
             width="stretch")
    e3.image(colour_bar(vmax_e, low="one class", high="mixed"), width="stretch")
    st.download_button("Conditional-diffusion mask (indexed PNG)", png_bytes(cd.labels, clf.classes.colors),
                       file_name=f"{r.stem}_conddiff_k{cd.samples}_mask.png", mime="image/png", key="dl_cd_mask")
