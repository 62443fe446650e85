"""`data`: make or convert data sets (synthetic cataract frames, CaDIS export)."""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..artefacts import CLASSIFIER, DATASET, METHOD, RUN, artefact_kind
from ..errors import OutputError
from .argtypes import MAX_SYNTH_FRAMES, MAX_SYNTH_SIZE, bounded_int, seed_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="create or convert data sets")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    s = dsub.add_parser("synth", help="write the embedded synthetic cataract-surgery data set")
    s.add_argument("out", metavar="OUT", help="folder data set to write (images/, masks/, classes.json, split.json)")
    s.add_argument("--size", type=bounded_int(8, MAX_SYNTH_SIZE), default=128, help="frame side in pixels")
    s.add_argument("--seed", type=seed_int, default=0, help="random seed of the generator")
    s.add_argument("--n-unlabelled", type=bounded_int(0, MAX_SYNTH_FRAMES), default=1000,
                   help="unlabelled frames (the pretraining pool); they never change the labelled ones")
    s.add_argument("--n-train", type=bounded_int(0, MAX_SYNTH_FRAMES), default=20, help="labelled train frames")
    s.add_argument("--n-test", type=bounded_int(0, MAX_SYNTH_FRAMES), default=100, help="labelled test frames")
    s.add_argument("--force", action="store_true",
                   help="replace the data set files (images/, masks/, classes.json, split.json) of a non-empty OUT")
    s.set_defaults(func=run_synth)
    c = dsub.add_parser("cadis", help="convert a CaDIS download (VideoNN/Images, VideoNN/Labels) to the folder format")
    c.add_argument("root", metavar="ROOT", help="CaDIS folder holding VideoNN/Images and VideoNN/Labels")
    c.add_argument("out", metavar="OUT", help="folder data set to write")
    from ..data.cadis import MERGES

    c.add_argument("--merge", choices=list(MERGES), default="study5",
                   help="class merge table of engine/data/cadis.py (README, \"Data sets\")")
    c.add_argument("--force", action="store_true",
                   help="replace the data set files (images/, masks/, classes.json, split.json) of a non-empty OUT")
    c.set_defaults(func=run_cadis)
    from .video_data_cmds import register_data_video

    register_data_video(dsub)
    from .labelling_cmds import register_data  # import-frames, export, import-masks

    register_data(dsub)


#: What a folder data set consists of; --force replaces exactly these in OUT, nothing else.
DATASET_PARTS = ("images", "masks", "classes.json", "split.json")


def write_dataset_into(out: str | Path, force: bool, build: Callable[[Path], object]) -> Path:
    """Write a data set into OUT via `build(dir)`: straight into a missing or empty OUT; into a non-empty one
    only with `force`, by building it beside the old files and swapping DATASET_PARTS in (other files stay).
    Runs, classifiers and saved methods are never overwritten."""
    out = Path(out)
    kind = artefact_kind(out)
    if kind in (RUN, CLASSIFIER, METHOD):
        raise OutputError(f"OUT {out}: is a {kind}; a data set written there would corrupt it. Choose another OUT")
    if out.exists() and not out.is_dir():
        raise OutputError(f"OUT {out}: exists and is not a directory")
    entries = sorted(e for e in os.listdir(out) if not e.startswith(".")) if out.is_dir() else []
    if not entries:
        build(out)
        return out
    if not force:
        what = "an existing data set" if kind == DATASET else f"a non-empty directory ({', '.join(entries[:3])} ...)"
        raise OutputError(f"OUT {out}: is {what}; pass --force to replace its images/, masks/, classes.json and "
                          "split.json, or choose an empty OUT")
    staging = Path(tempfile.mkdtemp(prefix=".dataset-", dir=out))
    try:
        build(staging)
        for part in DATASET_PARTS:
            old, new = out / part, staging / part
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            elif old.exists() or old.is_symlink():
                old.unlink()
            if new.exists():
                os.replace(new, old)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def run_synth(args: argparse.Namespace) -> int:
    from ..data.synthetic import write_synthetic_dataset

    out = write_dataset_into(args.out, args.force, lambda d: write_synthetic_dataset(
        d, size=args.size, seed=args.seed, n_unlabelled=args.n_unlabelled, n_train=args.n_train, n_test=args.n_test))
    print(out)
    return 0


def run_cadis(args: argparse.Namespace) -> int:
    from ..data.cadis import export_cadis

    print(write_dataset_into(args.out, args.force, lambda d: export_cadis(args.root, d, merge=args.merge)))
    return 0
