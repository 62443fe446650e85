"""Class decision offsets chosen by cross-validation: a measured lead for issue 13, not yet a `fit` technique.

The ensemble's labels are the argmax of its calibrated mean probabilities. Adding a per-class offset b_c to
their logarithm (a shift of the class priors, Bayes' decision rule for other priors) trades errors between
classes; mIoU is not what cross-entropy training maximises, so the best offsets are not zero — a rare, thin
class (the instrument) gains from a positive one. The offsets are chosen on TRAIN frames only: out-of-fold
probabilities of the classifier's own recipe and fit settings (the same k folds as `fit --recipe auto`),
coordinate ascent over a grid, the first class fixed at 0. Then the classifier as shipped is scored on the
test frames with and without them (95 % bootstrap intervals, paired bootstrap): test frames only score.

    python bench/decision_offsets.py [--run assets/demo_run --data assets/demo_data
                                      --classifier assets/demo_classifier --folds 4 --cv-seed 0]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data.folder import FolderDataset, load_labelled  # noqa: E402 - after the path setup above
from engine.models.run import load_run  # noqa: E402
from engine.scoring.bootstrap import bootstrap_miou, paired_bootstrap  # noqa: E402
from engine.scoring.cv import kfold_indices  # noqa: E402
from engine.segmentation.classifier import load_classifier  # noqa: E402
from engine.segmentation.classifier_training import fit_ensemble  # noqa: E402
from engine.segmentation.pixel_classifier import summarise  # noqa: E402
from engine.segmentation.self_training import ensemble_logits  # noqa: E402


def frame_cms(probs: list[torch.Tensor], masks: torch.Tensor, offsets: np.ndarray) -> np.ndarray:
    """(N, C, C) confusion matrices (rows truth) of argmax(log p + offsets) per frame; 255 is ignored."""
    c = len(offsets)
    b = torch.as_tensor(offsets, dtype=torch.float32)[:, None, None]
    out = np.zeros((len(probs), c, c), np.int64)
    for i, (p, y) in enumerate(zip(probs, masks)):
        lab = (torch.log(p.clamp_min(1e-12)) + b).argmax(0).numpy().ravel()
        t = y.numpy().ravel()
        keep = t < c
        out[i] = np.bincount(t[keep] * c + lab[keep], minlength=c * c).reshape(c, c)
    return out


def miou(cms: np.ndarray) -> float:
    m = cms.sum(0).astype(np.float64)
    inter = np.diag(m)
    union = m.sum(0) + m.sum(1) - inter
    return float(np.nanmean(np.where(union > 0, inter / np.maximum(union, 1), np.nan)))


def choose_offsets(probs: list[torch.Tensor], masks: torch.Tensor, c: int, grid: np.ndarray, sweeps: int
                   ) -> tuple[np.ndarray, list[float]]:
    """Coordinate ascent of the pooled mIoU over per-class offsets (class 0 fixed at 0); ties keep the
    smaller |offset|. Returns the offsets and the mIoU after each sweep."""
    b = np.zeros(c)
    trace = [miou(frame_cms(probs, masks, b))]
    order = grid[np.argsort(np.abs(grid), kind="stable")]
    for _ in range(sweeps):
        for k in range(1, c):
            scores = []
            for v in order:
                trial = b.copy()
                trial[k] = v
                scores.append(miou(frame_cms(probs, masks, trial)))
            b[k] = order[int(np.argmax(scores))]
        trace.append(miou(frame_cms(probs, masks, b)))
        if trace[-1] <= trace[-2]:
            break
    return b, trace


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=str(root / "assets/demo_run"))
    ap.add_argument("--data", default=str(root / "assets/demo_data"))
    ap.add_argument("--classifier", default=str(root / "assets/demo_classifier"))
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--cv-seed", type=int, default=0)
    ap.add_argument("--sweeps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    run = load_run(args.run, "cpu")
    ds = FolderDataset(args.data)
    clf = load_classifier(args.classifier, "cpu", use_cache=False)
    names = clf.classes.names
    c = len(names)
    ext = clf.extractor()
    images, masks, _ = load_labelled(ds, "train", run.image_size, clf.label_size)
    maps, flipped = ext.many(images), ext.many(images.flip(-1))
    hw = (int(masks.shape[-2]), int(masks.shape[-1]))
    oof: list[torch.Tensor | None] = [None] * len(masks)
    for tr, va in kfold_indices(len(masks), args.folds, args.cv_seed):
        idx = torch.as_tensor(tr)
        model, _ = fit_ensemble([m[idx] for m in maps], masks[idx], c, clf.fit_config)
        for i in va.tolist():
            logits = ensemble_logits(model, [m[i] for m in maps], hw,
                                     [m[i] for m in flipped] if clf.fit_config.flip_tta else None)
            oof[i] = summarise(logits, temperature=clf.temperature).probs
    probs = [p for p in oof if p is not None]
    grid = np.round(np.arange(-1.5, 2.0001, 0.1), 2)
    offsets, trace = choose_offsets(probs, masks, c, grid, args.sweeps)
    print(f"classifier {Path(args.classifier).name}: recipe t={list(clf.spec.steps)} blocks={list(clf.spec.blocks)}, "
          f"{clf.fit_config.members} members, temperature {clf.temperature:.3f}; {len(masks)} train frames, "
          f"{args.folds} folds (seed {args.cv_seed})")
    print(f"offsets chosen by CV (log-probability, {', '.join(names)}): {np.round(offsets, 2).tolist()}")
    print("out-of-fold CV mIoU per sweep: " + " → ".join(f"{v:.4f}" for v in trace))
    t_images, t_masks, _ = load_labelled(ds, "test", run.image_size, clf.label_size)
    t_hw = (int(t_masks.shape[-2]), int(t_masks.shape[-1]))
    test_probs = [clf.predict_tensor(im, t_hw).probs for im in t_images]
    plain, shifted = frame_cms(test_probs, t_masks, np.zeros(c)), frame_cms(test_probs, t_masks, offsets)
    for name, cms in (("as shipped", plain), ("with the CV offsets", shifted)):
        ci = bootstrap_miou(cms)
        m = cms.sum(0)
        iou = np.diag(m) / np.maximum(m.sum(0) + m.sum(1) - np.diag(m), 1)
        print(f"test ({len(t_masks)} frames), {name}: mIoU {ci['miou']:.4f} [{ci['lo']:.4f}, {ci['hi']:.4f}]; "
              + ", ".join(f"{n} {v:.3f}" for n, v in zip(names, iou)))
    d = paired_bootstrap(shifted, plain)
    print(f"paired bootstrap, offsets − shipped: {d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}], "
          f"p = {d['p_value']:.3f}; {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
