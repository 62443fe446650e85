"""`data`: make or convert data sets (synthetic cataract frames, CaDIS export)."""
from __future__ import annotations

import argparse

from .argtypes import MAX_SYNTH_FRAMES, MAX_SYNTH_SIZE, bounded_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="create or convert data sets")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    s = dsub.add_parser("synth", help="write the embedded synthetic cataract-surgery data set")
    s.add_argument("out")
    s.add_argument("--size", type=bounded_int(8, MAX_SYNTH_SIZE), default=128)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--n-unlabelled", type=bounded_int(0, MAX_SYNTH_FRAMES), default=1000)
    s.add_argument("--n-train", type=bounded_int(0, MAX_SYNTH_FRAMES), default=20)
    s.add_argument("--n-test", type=bounded_int(0, MAX_SYNTH_FRAMES), default=100)
    s.set_defaults(func=run_synth)
    c = dsub.add_parser("cadis", help="convert a CaDIS download (VideoNN/Images, VideoNN/Labels) to the folder format")
    c.add_argument("root")
    c.add_argument("out")
    c.add_argument("--merge", default="study5", help="class merge: study5, task1, task2, task3")
    c.set_defaults(func=run_cadis)
    from .video_data_cmds import register_data_video

    register_data_video(dsub)
    from .labelling_cmds import register_data  # import-frames, export, import-masks

    register_data(dsub)


def run_synth(args: argparse.Namespace) -> int:
    from ..data.synthetic import write_synthetic_dataset

    out = write_synthetic_dataset(args.out, size=args.size, seed=args.seed, n_unlabelled=args.n_unlabelled,
                                  n_train=args.n_train, n_test=args.n_test)
    print(out)
    return 0


def run_cadis(args: argparse.Namespace) -> int:
    from ..data.cadis import export_cadis

    print(export_cadis(args.root, args.out, merge=args.merge))
    return 0
