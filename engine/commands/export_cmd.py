"""`export-run`: copy a run for shipping (fp16 EMA weights, config, loss log, last grid)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-run", help="copy a trained run's EMA weights + config (optionally fp16)")
    p.add_argument("--run", required=True, help="run directory to export")
    p.add_argument("--out", required=True, help="directory to write (config.json, ema.pt, loss log, last grid)")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..output_lock import OutputLock
    from ..models.run import export_run

    with OutputLock(args.out):  # a second export (or a fit) writing the same folder is refused
        print(export_run(args.run, args.out, half=not args.fp32))
    return 0
