"""`compare`: train (cached) and score every comparison method on the same data; JSON + Markdown + figure."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import UserError
from ..methods.base import BUDGETS, METHODS, VARIANTS, default_methods
from .argtypes import MAX_FRAMES, bounded_int, device, positive_int


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

    work = Path(args.work) if args.work else Path(args.json).parent / "compare_work"
    with OutputLock(args.json), OutputLock(work):  # the report and the fitted-method cache have one writer
        return _compare(args, compare)


def _compare(args: argparse.Namespace, compare) -> int:  # noqa: ANN001
    report = compare(args.data, args.run, [m.strip() for m in args.methods.split(",") if m.strip()], args.json,
                     args.budget, args.work, args.pool, args.figure_frames, device=args.device,
                     overrides=_overrides(args.set),
                     max_test=args.max_test,
                     k_study=[int(k) for k in args.k_study.split(",") if k.strip()], k_study_frames=args.k_study_frames,
                     k_study_seeds=args.k_study_seeds, progress=lambda msg: print(msg, file=sys.stderr, flush=True),
                     scorecard=not args.no_scorecard)
    for name, r in report["methods"].items():
        print(f"{name:12s} mIoU {r['miou']:.3f}  train {r['train_seconds']:.0f}s  infer {r['infer_seconds_per_image']:.3f}s/img")
    print(f"wrote {args.json} (+ .md, .png)")
    return 0
