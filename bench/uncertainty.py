"""Uncertainty scorecard on the embedded default: the pixel ensemble (assets/demo_classifier) and conditional
diffusion (assets/demo_methods/conddiff), plus the DDPM familiarity check on the unfamiliar-input set.

Prints, per method: pixel ECE before / after temperature, review AUROC (frame mIoU below the test median, and
below 0.6), AURC (with the oracle's and a random order's), the share of test frames flagged at "about 10 % of
typical frames", and the AUROC of the method's own score for unfamiliar inputs; for conditional diffusion also
how the number of samples K changes its calibration and review flag (K = 1..--k-max, the first K of one
seeded draw of --k-max samples per test frame: mIoU, ECE of the sample mean, review AUROC of the sample
variance and, for comparison, of the ensemble's review score (frame_scores) on the sample mean); then the familiarity
detector's AUROC, the share of in-distribution test frames it flags, and per kind of unfamiliar / mildly
shifted image the share flagged and the median percentile. Also the familiarity check's time per frame
(median of --repeats). Targets (issue 12): familiarity AUROC ≥ 0.95 with ≤ 5 % of test frames flagged;
ECE ≤ 0.03 after temperature; review AUROC ≥ 0.8.

    python bench/uncertainty.py [--pool work/synth] [--max-test 100] [--per-kind 6] [--k-max 10]

Needs `python -m engine data synth work/synth` for the typical (pool) frames, assets/demo_run/familiarity.json
(`python -m engine familiarity fit`), and is quicker when assets/demo_classifier is calibrated
(`python -m engine calibrate`; otherwise its temperature is fitted here the same way).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.segmentation.classifier import load_classifier, load_labelled
from engine.data.folder import FolderDataset
from engine.methods.base import MethodOutput, load_standalone
from engine.methods.compare import load_pool
from engine.uncertainty import familiarity as fam
from engine.uncertainty.calibration import Reliability
from engine.uncertainty.frame_scores import review_score
from engine.uncertainty.method_review import variance_score
from engine.uncertainty.review import frame_miou, review_quality
from engine.uncertainty.scorecard import Collector, ScorecardContext, familiarity_input


class EnsembleMethod:
    """The shipped classifier seen as a compared method (raw mean softmax, so the scorecard shows ECE before and
    after its temperature; the review score is the classifier's own, on its calibrated probabilities)."""

    name = "ddpm-ensemble"

    def __init__(self, clf) -> None:
        self.clf, self.config = clf, {}

    def predict(self, image: torch.Tensor) -> MethodOutput:
        pred = self.clf.predict_tensor(image.float())
        probs = pred.raw_probs if pred.raw_probs is not None else pred.probs
        return MethodOutput(probs, {"js": pred.js}, pred.score)


class KStudy:
    """conddiff per K = 1..k_max from one seeded draw of k_max samples per test frame (the first K of them)."""

    def __init__(self, k_max: int, num_classes: int) -> None:
        self.k_max, self.nc = k_max, num_classes
        self.rel = [Reliability() for _ in range(k_max)]
        self.mious: list[list[float]] = [[] for _ in range(k_max)]
        self.var: list[list[float]] = [[] for _ in range(k_max)]
        self.ent: list[list[float]] = [[] for _ in range(k_max)]

    def add(self, p: torch.Tensor, truth) -> None:
        for k in range(1, self.k_max + 1):
            mean = p[:k].mean(dim=0)
            self.rel[k - 1].update(mean, truth)
            self.mious[k - 1].append(frame_miou(mean.argmax(0).numpy(), truth, self.nc))
            self.var[k - 1].append(variance_score(p[:k]))
            self.ent[k - 1].append(review_score(mean))

    def print(self) -> None:
        print(f"\nconddiff: number of samples K vs calibration and review (first K of {self.k_max} seeded samples "
              "per test frame)")
        print(f"{'K':>3s} {'mIoU':>6s} {'ECE':>6s} {'AUROC<med var':>13s} {'AUROC<med ent':>13s} {'AURC var':>8s}")
        for k in range(1, self.k_max + 1):
            m = self.mious[k - 1]
            q_var, q_ent = review_quality(self.var[k - 1], m), review_quality(self.ent[k - 1], m)
            print(f"{k:3d} {statistics.fmean(m):6.3f} {self.rel[k - 1].ece:6.3f} {fmt(q_var['auroc_below_median']):>13s} "
                  f"{fmt(q_ent['auroc_below_median']):>13s} {fmt(q_var['aurc']):>8s}")


def fmt(v: object, nd: int = 3) -> str:
    return "–" if v is None else f"{v:.{nd}f}"  # type: ignore[str-format]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classifier", default="assets/demo_classifier")
    ap.add_argument("--conddiff", default="assets/demo_methods/conddiff")
    ap.add_argument("--data", default="assets/demo_data")
    ap.add_argument("--pool", default="work/synth")
    ap.add_argument("--n-typical", type=int, default=60)
    ap.add_argument("--per-kind", type=int, default=6)
    ap.add_argument("--max-test", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--k-max", type=int, default=10, help="conddiff: samples per test frame for the K study "
                                                          "(at least its configured K; 0 = no K study)")
    ap.add_argument("--skip", default="", help="comma-separated: ensemble,conddiff,familiarity")
    args = ap.parse_args()
    torch.set_num_threads(2)
    skip = set(args.skip.split(","))
    clf = load_classifier(args.classifier, "cpu", use_cache=False)
    run = clf.run
    ds = FolderDataset(args.data)
    size = run.image_size
    tr_img, tr_mask, _ = load_labelled(ds, "train", size, size)
    te_img, te_mask, te_stems = load_labelled(ds, "test", size, size)
    te_img, te_mask, te_stems = te_img[:args.max_test], te_mask[:args.max_test], te_stems[:args.max_test]
    pool, src = load_pool(ds, size, args.pool)
    ctx = ScorecardContext.build(pool, src, [ds.image(s) for s in te_stems], size, (tr_img, tr_mask), run,
                                 n_typical=args.n_typical, per_kind=args.per_kind)
    methods = []
    if "ensemble" not in skip:
        methods.append(EnsembleMethod(clf))
    if "conddiff" not in skip:
        methods.append(load_standalone(args.conddiff, "cpu"))
    say = lambda m: print(m, file=sys.stderr, flush=True)
    cards, study = {}, None
    for m in methods:
        # conddiff: reuse its review_calibration.json when it was computed on these same typical frames
        ctx.calibrate_review(m, args.conddiff if m.name == "conddiff" else None, say)
        col = Collector(ds.classes.num_classes)
        t0 = time.time()
        k_default = int(m.config.get("samples", 0))
        if m.name == "conddiff" and args.k_max >= k_default:
            study = KStudy(args.k_max, ds.classes.num_classes)
        with torch.inference_mode():
            for i, (img, mask) in enumerate(zip(te_img, te_mask)):
                if study is not None and m.name == "conddiff":
                    p = m.sample_probs(img.float(), args.k_max, seed=0).cpu()  # predict(k, seed=0) = its first k
                    study.add(p, mask.numpy())
                    mean = p[:k_default].mean(dim=0)
                    out = MethodOutput(mean, {}, variance_score(p[:k_default]))
                else:
                    out = m.predict(img)
                col.add(out, mask.numpy())
                if (i + 1) % 20 == 0:
                    say(f"{m.name}: {i + 1}/{len(te_img)} test frames, {time.time() - t0:.0f} s")
        say(f"{m.name}: {len(te_img)} test frames in {time.time() - t0:.0f} s")
        cards[m.name] = ctx.finish(m, col, say)
    print(f"\nUncertainty scorecard, {len(te_img)} test frames of {args.data}; review threshold: about "
          f"{ctx.percent:g} % of typical frames ({ctx.typical_source})")
    print(f"{'method':15s} {'ECE':>6s} {'ECE@T':>6s} {'T':>5s} {'AUROC<med':>9s} {'AUROC<0.6':>9s} {'AURC':>6s} "
          f"{'oracle':>6s} {'random':>6s} {'flagged':>7s} {'unfam.AUROC':>11s}")
    for name, c in cards.items():
        r = c["review"]
        print(f"{name:15s} {fmt(c['ece']):>6s} {fmt(c['ece_after_temperature']):>6s} {fmt(c['temperature'], 2):>5s} "
              f"{fmt(r['auroc_below_median']):>9s} {fmt(r['auroc_below_bar']):>9s} {fmt(r['aurc']):>6s} "
              f"{fmt(r['aurc_oracle']):>6s} {fmt(r['aurc_random']):>6s} {r['test_flagged_share']:>7.0%} "
              f"{fmt(c['unfamiliar_auroc']):>11s}")
    for name, c in cards.items():
        print(f"  {name}: score = {c['score']}")
    if study is not None:
        study.print()
    if "familiarity" in skip:
        return 0
    f = ctx.familiarity(say)
    if not f["available"]:
        print(f"\nfamiliarity: not available ({f['why']})")
        return 0
    print(f"\nDDPM familiarity (flag above the pool's {f['flag_percentile']:g}th percentile): AUROC unfamiliar vs test "
          f"{fmt(f['auroc_unfamiliar_vs_test'])}; flagged: test {f['test_flagged_share']:.1%}, unfamiliar "
          f"{f['unfamiliar_flagged_share']:.1%}, mild shifts {f['mild_flagged_share']:.1%}")
    for kind, k in f["by_kind"].items():
        print(f"  {kind:14s} {k['group']:10s} flagged {k['flagged']}/{k['n']}  median percentile {k['median_percentile']:.1f}")
    model, _ = fam.load_for_run(run)
    x = familiarity_input(ds.image(te_stems[0]), run)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        model.assess(run, x)
        times.append(time.perf_counter() - t0)
    print(f"familiarity check: {statistics.median(times) * 1000:.0f} ms per frame (median of {args.repeats}, "
          f"{len(model.spec.steps)} timesteps in one batch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
