"""Class decision offsets chosen by cross-validation: a measured lead for issue 13, not yet a `fit` technique.

The ensemble's labels are the argmax of its calibrated mean probabilities. Adding a per-class offset b_c to
their logarithm (a shift of the class priors, Bayes' decision rule for other priors) trades errors between
classes; mIoU is not what cross-entropy training maximises, so the best offsets are not zero — a rare, thin
class (the instrument) gains from a positive one. The offsets are chosen on TRAIN frames only: out-of-fold
probabilities of the classifier's own recipe and fit settings (the same k folds as `fit --recipe auto`),
coordinate ascent over a grid, the first class fixed at 0. Then the classifier as shipped is scored on the
test frames with and without them (95 % bootstrap intervals, paired bootstrap): test frames only score.

    python bench/decision_offsets.py [--run assets/demo_run --data assets/demo_data
                                      --classifier assets/demo_classifier --folds 4 --cv-seed 0] [--seeds 1,2]
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data.folder import FolderDataset, load_labelled  # noqa: E402 - after the path setup above
from engine.models.run import load_run  # noqa: E402
from engine.scoring.bootstrap import bootstrap_miou, miou_of_counts, paired_bootstrap  # noqa: E402
from engine.scoring.metrics import ConfusionMatrix  # noqa: E402
from engine.scoring.cv import kfold_indices  # noqa: E402
from engine.segmentation.classifier import fit_classifier, load_classifier  # noqa: E402
from engine.segmentation.classifier_training import fit_ensemble  # noqa: E402
from engine.segmentation.pixel_classifier import summarise  # noqa: E402
from engine.segmentation.self_training import ensemble_logits  # noqa: E402


def log_probs(probs: list[torch.Tensor]) -> list[torch.Tensor]:
    """log p per frame, once: every offset trial adds to these."""
    return [torch.log(p.clamp_min(1e-12)) for p in probs]


def frame_cms(logp: list[torch.Tensor], masks: torch.Tensor, offsets: np.ndarray) -> np.ndarray:
    """(N, C, C) confusion matrices (rows truth) of argmax(log p + offsets) per frame; 255 is ignored."""
    c = len(offsets)
    b = torch.as_tensor(offsets, dtype=torch.float32)[:, None, None]
    return np.stack([ConfusionMatrix(c).update((lp + b).argmax(0).numpy(), y.numpy()).matrix
                     for lp, y in zip(logp, masks)])


def miou(cms: np.ndarray) -> float:
    """mIoU of the per-frame confusion matrices summed (the project's NaN-skipping definition)."""
    return float(miou_of_counts(cms.sum(0)))


def choose_offsets(logp: list[torch.Tensor], masks: torch.Tensor, c: int, grid: np.ndarray, sweeps: int
                   ) -> tuple[np.ndarray, list[float]]:
    """Coordinate ascent of the pooled mIoU over per-class offsets (class 0 fixed at 0); ties keep the
    smaller |offset|. Returns the offsets and the mIoU after each sweep."""
    b = np.zeros(c)
    trace = [miou(frame_cms(logp, masks, b))]
    order = grid[np.argsort(np.abs(grid), kind="stable")]
    for _ in range(sweeps):
        for k in range(1, c):
            scores = []
            for v in order:
                trial = b.copy()
                trial[k] = v
                scores.append(miou(frame_cms(logp, masks, trial)))
            b[k] = order[int(np.argmax(scores))]
        trace.append(miou(frame_cms(logp, masks, b)))
        if trace[-1] <= trace[-2]:
            break
    return b, trace


def one_seed(run, ds, clf, args, names: list[str]) -> dict:  # noqa: ANN001 - bench helper
    """Offsets chosen by CV for this classifier's recipe and fit; its test confusion matrices without/with them."""
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
    offsets, trace = choose_offsets(log_probs(probs), masks, c, grid, args.sweeps)
    t_images, t_masks, _ = load_labelled(ds, "test", run.image_size, clf.label_size)
    t_hw = (int(t_masks.shape[-2]), int(t_masks.shape[-1]))
    test_logp = log_probs([clf.predict_tensor(im, t_hw).probs for im in t_images])
    return {"offsets": offsets, "trace": trace, "plain": frame_cms(test_logp, t_masks, np.zeros(c)),
            "shifted": frame_cms(test_logp, t_masks, offsets), "n_train": len(masks), "n_test": len(t_masks)}


def report(name: str, cms: np.ndarray, names: list[str]) -> None:
    ci = bootstrap_miou(cms)
    m = cms.sum(0)
    iou = np.diag(m) / np.maximum(m.sum(0) + m.sum(1) - np.diag(m), 1)
    print(f"  {name}: mIoU {ci['miou']:.4f} [{ci['lo']:.4f}, {ci['hi']:.4f}]; "
          + ", ".join(f"{n} {v:.3f}" for n, v in zip(names, iou)))


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=str(root / "assets/demo_run"))
    ap.add_argument("--data", default=str(root / "assets/demo_data"))
    ap.add_argument("--classifier", default=str(root / "assets/demo_classifier"))
    ap.add_argument("--seeds", default="",
                    help="also refit the classifier's recipe with these fit seeds (comma-separated; the given "
                         "classifier counts as its own seed) and repeat the whole measurement for each")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--cv-seed", type=int, default=0)
    ap.add_argument("--sweeps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    run = load_run(args.run, "cpu")
    ds = FolderDataset(args.data)
    shipped = load_classifier(args.classifier, "cpu", use_cache=False)
    names = shipped.classes.names
    print(f"classifier {Path(args.classifier).name}: recipe t={list(shipped.spec.steps)} "
          f"blocks={list(shipped.spec.blocks)}, {shipped.fit_config.members} members, fit seed "
          f"{shipped.fit_config.seed}, temperature {shipped.temperature:.3f}; {args.folds} folds (seed {args.cv_seed})")
    results = {}
    for seed in [shipped.fit_config.seed] + [int(v) for v in args.seeds.split(",") if v.strip()]:
        if seed in results:
            continue
        clf = shipped if seed == shipped.fit_config.seed else fit_classifier(
            run, ds, shipped.spec, replace(shipped.fit_config, seed=seed), label_size=shipped.label_size)
        r = results[seed] = one_seed(run, ds, clf, args, names)
        print(f"fit seed {seed}: offsets chosen by CV (log-probability, {', '.join(names)}): "
              f"{np.round(r['offsets'], 2).tolist()}; out-of-fold CV mIoU per sweep "
              + " → ".join(f"{v:.4f}" for v in r["trace"]) + f"; test ({r['n_test']} frames):", flush=True)
        report("without offsets", r["plain"], names)
        report("with the CV offsets", r["shifted"], names)
        d = paired_bootstrap(r["shifted"], r["plain"])
        print(f"  paired bootstrap, offsets − without: {d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}], "
              f"p = {d['p_value']:.3f}; {time.time() - t0:.0f} s", flush=True)
    if len(results) > 1:
        gains = [miou(r["shifted"]) - miou(r["plain"]) for r in results.values()]
        plain = sum(r["plain"] for r in results.values())
        shifted = sum(r["shifted"] for r in results.values())
        d = paired_bootstrap(shifted, plain)
        print(f"over fit seeds {list(results)}: gain {np.mean(gains):+.4f} ± {np.std(gains, ddof=1):.4f} (mean ± sd); "
              f"per-frame confusion matrices summed over the seeds: {miou(plain):.4f} → {miou(shifted):.4f}, paired "
              f"{d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}], p = {d['p_value']:.3f}")
        report("summed, without offsets", plain, names)
        report("summed, with offsets", shifted, names)


if __name__ == "__main__":
    main()
