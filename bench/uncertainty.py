"""Uncertainty scorecard on the embedded default: the pixel ensemble (assets/demo_classifier) and conditional
diffusion (assets/demo_methods/conddiff), plus the DDPM familiarity check on the unfamiliar-input set.

Prints, per method: pixel ECE before / after temperature, review AUROC (frame mIoU below the test median, and
below 0.6), AURC (with the oracle's and a random order's), the share of test frames flagged at "about 10 % of
typical frames", and the AUROC of the method's own score for unfamiliar inputs; then the familiarity
detector's AUROC, the share of in-distribution test frames it flags, and per kind of unfamiliar / mildly
shifted image the share flagged and the median percentile. Also the familiarity check's time per frame
(median of --repeats). Targets (issue 12): familiarity AUROC ≥ 0.95 with ≤ 5 % of test frames flagged;
ECE ≤ 0.03 after temperature; review AUROC ≥ 0.8.

    python bench/uncertainty.py [--pool work/synth] [--max-test 100] [--per-kind 6]

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
from engine.uncertainty.scorecard import Collector, ScorecardContext, familiarity_input


class EnsembleMethod:
    """The shipped classifier seen as a compared method (raw mean softmax; its temperature is the scorecard's)."""

    name = "ddpm-ensemble"

    def __init__(self, clf) -> None:
        self.clf, self.config = clf, {}

    def predict(self, image: torch.Tensor) -> MethodOutput:
        pred = self.clf.predict_tensor(image.float())
        probs = pred.raw_probs if pred.raw_probs is not None else pred.probs
        return MethodOutput(probs, {"js": pred.js}, pred.score)


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
    ap.add_argument("--skip", default="", help="comma-separated: ensemble,conddiff")
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
    cards = {}
    for m in methods:
        # conddiff: reuse its review_calibration.json when it was computed on these same typical frames
        ctx.calibrate_review(m, args.conddiff if m.name == "conddiff" else None, say)
        col = Collector(ds.classes.num_classes)
        t0 = time.time()
        with torch.inference_mode():
            for img, mask in zip(te_img, te_mask):
                col.add(m.predict(img), mask.numpy())
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
