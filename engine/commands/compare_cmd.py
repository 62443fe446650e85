"""`compare`: train (cached) and score every comparison method on the same data; JSON + Markdown + figure."""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext

from ..errors import UserError
from ..methods.base import BUDGETS, METHODS, VARIANTS, default_methods
from .argtypes import MAX_FRAMES, bounded_int, device, int_list, positive_int, seed_int


def register(sub: argparse._SubParsersAction) -> None:
    defaults = default_methods()
    p = sub.add_parser("compare", help=f"train and evaluate the comparison methods ({', '.join(defaults)}) "
                                       "on one data set")
    p.add_argument("--data", required=True, help="folder data set (train + test splits)")
    p.add_argument("--run", help="pretrained DDPM run (needed by the methods that use it: ddpm, datasetddpm)")
    p.add_argument("--methods", default=",".join(defaults),
                   help=f"comma-separated, from {', '.join(METHODS)} (variants run only when named: "
                        f"{', '.join(sorted(VARIANTS))})")
    p.add_argument("--json", required=True, help="results JSON; OUT.md and OUT.png are written next to it")
    p.add_argument("--budget", choices=list(BUDGETS), default="quick",
                   help="training budget of every method: tiny = a few steps (tests, seconds), quick = the "
                        "shipped CPU comparison (~20 min on 2 cores), full = paper-sized runs for a GPU")
    p.add_argument("--work", help="cache of fitted methods (default: JSON's folder/compare_work)")
    p.add_argument("--pool", help="folder data set whose unlabeled split is the pretraining pool (used when "
                                  "--data has no unlabeled split; otherwise its train images only, never test ones)")
    p.add_argument("--figure-frames", type=bounded_int(1, MAX_FRAMES), default=4,
                   help="test frames in the side-by-side figure")
    p.add_argument("--max-test", type=positive_int, help="evaluate only the first N test frames")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=JSON",
                   help="override a method config value, e.g. conddiff.samples=10 (repeatable)")
    p.add_argument("--k-study", default="1,5,10", help="sampling methods (conddiff): mIoU spread over seeds for these "
                   "sample counts K (writes OUT_<method>_k.png); empty to skip")
    p.add_argument("--k-study-frames", type=bounded_int(1, MAX_FRAMES), default=8, help="test frames of the K study")
    p.add_argument("--k-study-seeds", type=bounded_int(1, 100), default=3, help="sampling seeds per K in the K study")
    p.add_argument("--no-scorecard", action="store_true",
                   help="skip the uncertainty scorecard (ECE, temperature, review AUROC / AURC, unfamiliar inputs)")
    p.add_argument("--seeds", type=int_list, default=None,
                   help="train every method once per seed, e.g. 0,1,2: mean ± sd, and a paired bootstrap test of "
                        "each method against ddpm over the same test frames")
    p.add_argument("--seed-methods", help="with --seeds: repeat only these methods (comma-separated); the others "
                   "run once with the first seed (e.g. to leave out conddiff's 11-minute training)")
    p.add_argument("--boot-seed", type=seed_int, default=0, help="seed of the bootstrap resampling of test frames")
    p.add_argument("--label-counts", type=int_list, default=None,
                   help="label-count curve instead of one table: mIoU vs number of labelled train frames, e.g. "
                        "1,2,5,10,20 (writes OUT.json/.md/.png; seeds from --seeds, default 0,1,2)")
    p.add_argument("--add-to", metavar="CURVE_JSON",
                   help="with --label-counts: also join these methods' curves into an existing curve report made on "
                        "the same data, run, budget and pool (rewrites its .json/.md/.png)")
    p.add_argument("--label-draws", type=positive_int, default=2,
                   help="label-count curve: random subsets of train frames per count (seeded)")
    p.add_argument("--cache-dir", help="root of the DDPM feature cache, as fit's --cache-dir (default: none: features are "
                                       "recomputed per fit; give it to share features across seeds and label draws)")
    p.add_argument("--device", type=device, default="cpu", help="torch device: cpu, cuda, cuda:N or mps")
    p.set_defaults(func=run_compare)


def _overrides(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for it in items:
        key, _, val = it.partition("=")
        method, _, k = key.partition(".")
        if not (method and k and val):
            raise UserError(f"--set {it!r}: expected METHOD.KEY=VALUE")
        try:
            v = json.loads(val)
        except json.JSONDecodeError:
            v = val
        out.setdefault(method, {})[k] = v
    return out


def run_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..methods.compare import compare
    from ..output_lock import OutputLock

    if args.add_to:  # checked before any training, not after hours of it
        from ..validation import read_json

        if not args.label_counts:
            raise UserError("--add-to joins label-count curves: give --label-counts too")
        base = read_json(args.add_to)
        if not isinstance(base, dict) or base.get("kind") != "label_curve":
            raise UserError(f"--add-to {args.add_to}: not a label-count curve report (kind label_curve)")
    work = Path(args.work) if args.work else Path(args.json).parent / "compare_work"
    with OutputLock(args.json), OutputLock(work), (OutputLock(args.add_to) if args.add_to else nullcontext()):
        return _compare(args, compare)  # one writer each: the report, the fitted-method cache, the joined curve


def _compare(args: argparse.Namespace, compare) -> int:  # noqa: ANN001
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    progress = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.label_counts:
        from ..methods.label_curve import label_curve

        if any(c < 1 for c in args.label_counts):
            raise UserError(f"--label-counts {args.label_counts}: counts must be >= 1")
        curve = label_curve(args.data, args.run, methods, args.label_counts, args.json, args.seeds or [0, 1, 2],
                            args.label_draws, args.budget, args.work, args.pool, args.device, _overrides(args.set),
                            max_test=args.max_test, progress=progress, feature_cache_dir=args.cache_dir)
        if args.add_to:
            from ..methods.label_curve import merge_curves, write_curve
            from ..validation import read_json

            write_curve(merge_curves(read_json(args.add_to), curve), args.add_to)
            print(f"joined {', '.join(curve['methods'])} into {args.add_to} (+ .md, .png)")
        for name, cur in curve["curves"].items():
            print(f"{name:12s} " + "  ".join(f"n={c}: {v['mean']:.3f}±{v['sd']:.3f}" for c, v in cur.items()))
        print(f"wrote {args.json} (+ .md, .png)")
        return 0
    report = compare(args.data, args.run, methods, args.json,
                     args.budget, args.work, args.pool, args.figure_frames, device=args.device,
                     overrides=_overrides(args.set),
                     max_test=args.max_test,
                     k_study=[int(k) for k in args.k_study.split(",") if k.strip()], k_study_frames=args.k_study_frames,
                     k_study_seeds=args.k_study_seeds, progress=progress,
                     scorecard=not args.no_scorecard, seeds=args.seeds, boot_seed=args.boot_seed,
                     feature_cache_dir=args.cache_dir,
                     seed_methods=[m.strip() for m in args.seed_methods.split(",")] if args.seed_methods else None)
    for name, r in report["methods"].items():
        ci, sd = r.get("miou_ci95"), r.get("seeds")
        extra = f" [{ci['lo']:.3f}, {ci['hi']:.3f}]" if ci else ""
        extra += f"  seeds {sd['mean']:.3f}±{sd['sd']:.3f}" if sd else ""
        print(f"{name:12s} mIoU {r['miou']:.3f}{extra}  train {r['train_seconds']:.0f}s  "
              f"infer {r['infer_seconds_per_image']:.3f}s/img")
    print(f"wrote {args.json} (+ .md, .png)")
    return 0
