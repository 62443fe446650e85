"""`report` (one self-contained HTML file of a workspace) and `compare-predictions` (precompute the Compare
page's test-frame masks into `<report>_predictions.npz`)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .argtypes import positive_int
from ..errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write one self-contained HTML report of a workspace (opens offline)")
    p.add_argument("--workspace", default=None, help="workspace folder (default: $DIFFSEG_WORKSPACE or assets/)")
    p.add_argument("--run", help="run directory (default: the workspace's)")
    p.add_argument("--data", help="folder data set (default: the workspace's)")
    p.add_argument("--classifier", help="classifier directory (default: the workspace's)")
    p.add_argument("--frames", type=positive_int, default=3, help="example test frames to show")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.set_defaults(func=run_report)

    c = sub.add_parser("compare-predictions", help="precompute a comparison's test-frame masks for the dashboard")
    c.add_argument("--compare", required=True, help="compare JSON (its methods are loaded from their dirs)")
    c.add_argument("--data", required=True, help="folder data set of the compare report")
    c.add_argument("--run", default=None, help="the DDPM run (for ddpm / datasetddpm)")
    c.add_argument("--frames", type=positive_int, default=6, help="first N test frames")
    c.add_argument("--out", default=None, help="default: <compare stem>_predictions.npz beside it")
    c.set_defaults(func=run_compare_predictions)


def run_report(args: argparse.Namespace) -> int:
    from ..atomic import write_text_atomic
    from ..outputs.report import build_report
    from ..app.workspace import resolve

    root = Path(args.workspace) if args.workspace else None
    if root is not None and not root.is_dir():
        raise FileNotFoundError(f"--workspace {root}: no such folder")
    ws = resolve(root, args.run, args.data, args.classifier)
    html = build_report(ws, n_frames=args.frames)
    write_text_atomic(args.out, html)
    print(json.dumps({"report": str(args.out), "bytes": len(html.encode())}))
    return 0


def run_compare_predictions(args: argparse.Namespace) -> int:
    from ..methods import compare_cache, compare_report
    from ..data.folder import FolderDataset
    from ..app.explore import model_input
    from ..models.run import load_run
    from ..app.workspace import read_json

    report = read_json(args.compare)
    if not compare_report.method_results(report):
        raise UserError(f"--compare {args.compare}: not a compare report with method results")
    ds = FolderDataset(args.data)
    size = int(report.get("image_size") or 64)
    run = load_run(args.run, "cpu") if args.run else None
    dirs = compare_report.method_dirs(report, None, Path(args.compare).parent)
    methods = compare_report.load_methods(dirs, ds.classes, size, "cpu", run)
    fps = {n: compare_cache.fingerprint(dirs[n]) for n in methods}
    store = compare_cache.PredictionStore(args.out or compare_cache.store_path(args.compare))
    store.keep_only(fps)  # a refitted method's old masks go
    stems = ds.stems("test")[: args.frames]
    made = compare_cache.precompute(store, fps, stems, lambda m, s: compare_report.frame_prediction(
        methods[m], model_input(ds, s, size)))
    path = store.save()
    print(json.dumps({"store": str(path), "predicted": made, "methods": sorted(methods), "frames": len(stems)}))
    return 0
