"""Evaluating a segmentation classifier on a split, and the block × timestep sweep (study's Fig. 11)."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .bootstrap import bootstrap_miou
from ..segmentation.classifier import SegmentationClassifier, check_same_classes, load_labelled
from ..segmentation.classifier_training import FitConfig, fit_ensemble
from .cv import DEFAULT_FOLDS, cv_score
from ..data.folder import SegDataset
from ..errors import ConfigError
from ..segmentation.feature_cache import FeatureCache
from ..segmentation.features import FeatureExtractor, FeatureSpec
from .metrics import ConfusionMatrix, summarize
from ..segmentation.pixel_classifier import summarise
from ..models.run import IDENTITY_SCHEME, Run

log = logging.getLogger(__name__)
# The sweep's per-cell fit: small, so the 48-cell grid stays interactive; Tune's "Fit ensemble" reuses it
# so its score equals the heat map's for the same cell and frames.
#: training pixels per sweep cell (a cell's classifier sees one block at one t: a small subsample suffices)
SWEEP_MAX_PIXELS = 60_000
SWEEP_FIT = FitConfig(members=2, max_epochs=3, max_pixels=SWEEP_MAX_PIXELS)
Progress = Callable[[int, int, str], None]
SWEEP_MODES = ("cv", "test")
# one member per fold: the k folds already average over fits, so a CV sweep costs about what a test sweep did
CV_SWEEP_FIT = FitConfig(members=1, max_epochs=3, max_pixels=30_000)


def evaluate_classifier(clf: SegmentationClassifier, ds: SegDataset, split: str = "test",
                        reference_metric: bool = False, progress: Progress | None = None,
                        keep_predictions: bool = False) -> dict[str, Any]:
    """Metrics over a labelled split (the JSON keys listed in the README, "Methods compared"), plus per-image
    uncertainty scores.

    A data set whose class table (ids, names) differs from the classifier's is refused: its IoUs would be
    reported under the wrong names."""
    check_same_classes(clf.classes, ds.classes, str(clf.path or "(unsaved)"), str(getattr(ds, "root", "data set")))
    images, masks, stems = load_labelled(ds, split, clf.run.image_size, clf.label_size)
    cm = ConfusionMatrix(ds.classes.num_classes)
    scores, preds, frame_cms, t0 = [], [], [], time.time()
    for i, (img, mask) in enumerate(zip(images, masks)):
        pred = clf.predict_tensor(img, tuple(mask.shape))
        cm.update(pred.labels.numpy(), mask.numpy())
        frame_cms.append(ConfusionMatrix(ds.classes.num_classes).update(pred.labels.numpy(), mask.numpy()).matrix)
        scores.append(pred.score)
        if keep_predictions:
            preds.append(pred.labels.numpy().astype(np.uint8))
        if progress:
            progress(i + 1, len(images), f"evaluating {i + 1}/{len(images)}")
    elapsed = time.time() - t0
    out = summarize(cm, ds.classes.names, reference_metric)
    out.update({
        "split": split, "n_images": len(stems), "train_seconds": clf.stats.get("train_seconds", 0.0)
        + clf.stats.get("feature_seconds", 0.0), "infer_seconds_per_image": elapsed / max(len(stems), 1),
        "uncertainty": dict(zip(stems, scores)), "spec": clf.spec.to_dict(),
        # 95 % bootstrap interval over the split's frames (our IoU convention, even with reference_metric)
        "miou_ci95": bootstrap_miou(np.stack(frame_cms)),
    })
    if clf.run.meta.get("pool_includes_test"):  # the study's protocol: say so next to the scores
        out["run_pretrained_on_test_frames"] = True
    if keep_predictions:
        out["_predictions"] = preds
    return out


def sweep(run: Run, ds: SegDataset, steps: Sequence[int], blocks: Sequence[int] | None = None,
          fit_cfg: FitConfig | None = None, cache: FeatureCache | None = None, train_split: str = "train",
          test_split: str = "test", max_test: int | None = 30, progress: Progress | None = None,
          mode: str = "cv", folds: int = DEFAULT_FOLDS, cv_seed: int = 0) -> dict[str, Any]:
    """mIoU of a classifier on each single (block, t): the grid of which activations carry semantics.

    mode "cv" (default): k-fold cross-validation over the labelled TRAIN frames (engine/scoring/cv.py); no test
    frame is loaded, so the grid may be used to choose a recipe. mode "test": fit on train, score on the
    first `max_test` test frames (reporting only: a choice made from it is optimistic).
    Features of every block are extracted once per image and t (cached), then a small ensemble is fit per
    cell (per fold in CV mode).
    """
    if mode not in SWEEP_MODES:
        raise ConfigError(f"unknown sweep mode {mode!r}; choose one of {list(SWEEP_MODES)}")
    blocks = list(blocks if blocks is not None else range(len(run.model.output_blocks)))
    fit_cfg = fit_cfg or (CV_SWEEP_FIT if mode == "cv" else SWEEP_FIT)
    spec = FeatureSpec(tuple(steps), tuple(blocks))
    label = run.image_size
    tr_img, tr_mask, _ = load_labelled(ds, train_split, run.image_size, label)
    te_img = te_mask = None
    if mode == "test":
        te_img, te_mask, _ = load_labelled(ds, test_split, run.image_size, label)
        if max_test:
            te_img, te_mask = te_img[:max_test], te_mask[:max_test]
    ext = FeatureExtractor(run, spec, cache)
    t0 = time.time()
    tr_maps = ext.many(tr_img)
    te_maps = ext.many(te_img) if te_img is not None else None
    feature_seconds = time.time() - t0
    n_cls = ds.classes.num_classes
    grid = np.full((len(blocks), len(steps)), np.nan)
    per_class: dict[str, dict[str, Any]] = {}
    cells = [(bi, ti) for ti in range(len(steps)) for bi in range(len(blocks))]
    for done, (bi, ti) in enumerate(cells):
        k = ti * len(blocks) + bi  # t-major order of the spec
        if te_maps is None:
            m = cv_score([tr_maps[k]], tr_mask, ds.classes.names, fit_cfg, folds, cv_seed)
        else:
            model, _ = fit_ensemble([tr_maps[k]], tr_mask, n_cls, fit_cfg)
            cm = ConfusionMatrix(n_cls)
            for j in range(len(te_img)):  # type: ignore[arg-type]
                logits = model.predict_logits([te_maps[k][j].float()], tuple(te_mask.shape[-2:]))  # type: ignore[union-attr]
                cm.update(summarise(logits).labels.numpy(), te_mask[j].numpy())  # type: ignore[index]
            m = summarize(cm, ds.classes.names)
        grid[bi, ti] = m["miou"]
        per_class[f"{blocks[bi]}@{steps[ti]}"] = m["per_class_iou"]
        if progress:
            progress(done + 1, len(cells), f"block {blocks[bi]} t={steps[ti]}: mIoU {m['miou']:.3f}")
    bi_best, ti_best = (int(i) for i in np.unravel_index(np.nanargmax(grid), grid.shape))
    return {
        "mode": mode, "scored_on": (f"{min(folds, len(tr_img))}-fold cross-validation over {len(tr_img)} "
                                    f"{train_split} frames" if mode == "cv" else f"first {len(te_img)} {test_split} "  # type: ignore[arg-type]
                                    "frames (reporting only)"),
        "folds": min(folds, len(tr_img)) if mode == "cv" else None, "cv_seed": cv_seed if mode == "cv" else None,
        "run_weights_hash": run.weights_hash, "run_identity_scheme": IDENTITY_SCHEME,
        "steps": list(steps), "blocks": blocks, "miou": grid.tolist(), "per_class_iou": per_class,
        "best": {"block": blocks[bi_best], "step": steps[ti_best], "miou": float(grid[bi_best, ti_best])},
        "block_shapes": [list(s) for s in run.model.block_shapes()],
        "n_train": len(tr_img), "n_test": len(te_img) if te_img is not None else 0, "fit": fit_cfg.to_dict(),
        "feature_seconds": feature_seconds, "seconds": time.time() - t0,
    }


def sweep_figure(result: dict[str, Any], selected: tuple[int, int] | None = None):  # -> plotly Figure
    """Plotly heatmap of a sweep result (rows = blocks, columns = timesteps), best cell outlined.

    An invisible marker sits on every cell (customdata = [block, t]): heat-map traces do not emit plotly
    selection events, markers do, so a click on a cell selects it in Streamlit's on_select. `selected`
    (block, t) is outlined with a dashed white frame.
    """
    import plotly.graph_objects as go

    z = np.array(result["miou"], dtype=float)
    xs, ys = [str(s) for s in result["steps"]], [str(b) for b in result["blocks"]]
    fig = go.Figure(go.Heatmap(
        z=z, x=xs, y=ys, colorscale="Viridis", text=np.round(z, 3), texttemplate="%{text}", hoverinfo="skip",
        colorbar={"title": "mIoU"}))
    cells = [(b, t) for b in result["blocks"] for t in result["steps"]]
    fig.add_trace(go.Scatter(
        x=[str(t) for _, t in cells], y=[str(b) for b, _ in cells], mode="markers", showlegend=False,
        marker={"size": 28, "symbol": "square", "opacity": 0.0, "color": "white"}, customdata=cells,
        hovertemplate="block %{customdata[0]}, t=%{customdata[1]}: click to inspect<extra></extra>",
        selected={"marker": {"opacity": 0.0}}, unselected={"marker": {"opacity": 0.0}}))
    best = result.get("best") or {}

    def frame(block: int, step: int, colour: str, dash: str) -> None:
        i, j = result["steps"].index(step), result["blocks"].index(block)
        fig.add_shape(type="rect", x0=i - 0.5, x1=i + 0.5, y0=j - 0.5, y1=j + 0.5,
                      line={"color": colour, "width": 3, "dash": dash})

    if best.get("block") in result["blocks"] and best.get("step") in result["steps"]:
        frame(best["block"], best["step"], "#ff2d2d", "solid")
        # category axes read numeric-looking strings as indices: place the label by index
        fig.add_annotation(x=result["steps"].index(best["step"]), y=result["blocks"].index(best["block"]), text="best",
                           showarrow=False, yshift=-12, font={"color": "#ff2d2d", "size": 11})
    if selected and selected[0] in result["blocks"] and selected[1] in result["steps"]:
        frame(selected[0], selected[1], "white", "dash")
    scored = result.get("scored_on", "test frames (an older sweep without a mode)")
    fig.update_layout(title=f"mIoU of a pixel classifier on one decoder block at one timestep<br><sub>scored by {scored}</sub>",
                      xaxis_title="diffusion timestep t", yaxis_title="decoder block (output_blocks[i], 0 = deepest)",
                      xaxis={"type": "category"}, yaxis={"autorange": "reversed", "type": "category"},
                      height=120 + 32 * len(result["blocks"]), clickmode="event+select", dragmode=False)
    return fig
