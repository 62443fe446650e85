"""`data synth-video` (a synthetic clip with exact labels) and `data import-video` (clip → folder data set)."""
from __future__ import annotations

import argparse
import json
import sys

from .argtypes import positive_int


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def register_data_video(dsub: argparse._SubParsersAction) -> None:
    v = dsub.add_parser("synth-video", help="write a synthetic surgery clip (H.264 MP4) with exact per-frame labels")
    v.add_argument("out", help="directory for <name>.mp4, <name>_labels.npz, classes.json, <name>.json")
    v.add_argument("--name", default="clip")
    v.add_argument("--width", type=positive_int, default=640)
    v.add_argument("--height", type=positive_int, default=480)
    v.add_argument("--fps", type=_positive_float, default=10.0)
    v.add_argument("--seconds", type=_positive_float, default=6.0)
    v.add_argument("--instruments", type=int, choices=range(5), default=2)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--speculum", action="store_true",
                   help="draw the lid speculum (its wires are labelled instrument, so presence is then always true)")
    v.add_argument("--crf", type=int, default=20, help="H.264 quality (lower = larger file)")
    v.set_defaults(func=run_synth_video)

    i = dsub.add_parser("import-video", help="decode a clip into the folder format, every frame unlabelled")
    i.add_argument("video")
    i.add_argument("out")
    g = i.add_mutually_exclusive_group(required=True)
    g.add_argument("--every", type=positive_int, help="keep every N-th decoded frame")
    g.add_argument("--fps", type=_positive_float, help="keep frames at this rate (by timestamps)")
    i.add_argument("--dedup", type=float, default=0.01,
                   help="skip a frame whose 32×32 grey thumbnail differs from the last kept one by less than this "
                        "mean absolute difference (0..1; 0 = keep all)")
    i.add_argument("--classes", help="classes.json to use (default: the study's five cataract classes)")
    i.add_argument("--no-progress", action="store_true")
    i.set_defaults(func=run_import_video)


def run_synth_video(args: argparse.Namespace) -> int:
    from ..video.synth_video import ClipConfig, write_clip

    cfg = ClipConfig(args.width, args.height, args.fps, args.seconds, args.seed, args.instruments, args.speculum)
    print(json.dumps(write_clip(args.out, cfg, args.name, args.crf)))
    return 0


def run_import_video(args: argparse.Namespace) -> int:
    from ..data.classes import STUDY5, ClassTable
    from ..video.import_video import import_video

    classes = ClassTable.from_json(args.classes) if args.classes else STUDY5

    def show(done: int, total: int, kept: int) -> None:
        if not args.no_progress:
            print(f"\r[{done}/{total or '?'}] frames decoded, {kept} kept".ljust(60), end="", file=sys.stderr,
                  flush=True)

    result = import_video(args.video, args.out, classes, args.every, args.fps, args.dedup, show)
    if not args.no_progress:
        print(file=sys.stderr)
    result.pop("video")
    print(json.dumps(result))
    return 0
