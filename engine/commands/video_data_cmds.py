"""`data synth-video` (a synthetic clip with exact labels) and `data import-video` (clip → folder data set)."""
from __future__ import annotations

import argparse
import json

from ..progress import progress_printer
from .argtypes import positive_float, positive_int


def register_data_video(dsub: argparse._SubParsersAction) -> None:
    v = dsub.add_parser("synth-video", help="write a synthetic surgery clip (H.264 MP4) with exact per-frame labels")
    v.add_argument("out", help="directory for <name>.mp4, <name>_labels.npz, classes.json, <name>.json")
    v.add_argument("--name", default="clip", help="file name stem of the clip and its labels")
    v.add_argument("--width", type=positive_int, default=640, help="frame width in pixels")
    v.add_argument("--height", type=positive_int, default=480, help="frame height in pixels")
    v.add_argument("--fps", type=positive_float, default=10.0, help="frames per second")
    v.add_argument("--seconds", type=positive_float, default=6.0, help="clip length")
    v.add_argument("--instruments", type=int, choices=range(5), default=2, help="instruments moving in the scene")
    v.add_argument("--seed", type=int, default=0, help="random seed of the scene and its motion")
    v.add_argument("--speculum", action="store_true",
                   help="draw the lid speculum (its wires are labelled instrument, so presence is then always true)")
    v.add_argument("--crf", type=int, default=20, help="H.264 quality (lower = larger file)")
    v.set_defaults(func=run_synth_video)

    i = dsub.add_parser("import-video", help="decode a clip into the folder format, every frame unlabelled")
    i.add_argument("video", metavar="VIDEO", help="video file (anything FFmpeg decodes: MP4, MOV, AVI, …)")
    i.add_argument("out", metavar="OUT", help="folder data set to write (images/, classes.json, split.json)")
    g = i.add_mutually_exclusive_group(required=True)
    g.add_argument("--every", type=positive_int, help="keep every N-th decoded frame")
    g.add_argument("--fps", type=positive_float, help="keep frames at this rate (by timestamps)")
    i.add_argument("--dedup", type=float, default=0.01,
                   help="skip a frame whose 32×32 grey thumbnail differs from the last kept one by less than this "
                        "mean absolute difference (0..1; 0 = keep all)")
    i.add_argument("--classes", help="classes.json to use (default: the study's five cataract classes)")
    i.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
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

    printer = progress_printer()

    def show(done: int, total: int, kept: int) -> None:
        if not args.no_progress:
            printer(done, total or 0, f"frames decoded, {kept} kept")

    result = import_video(args.video, args.out, classes, args.every, args.fps, args.dedup, show)
    result.pop("video")
    print(json.dumps(result))
    return 0
