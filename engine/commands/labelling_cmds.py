"""`suggest` and `refit` (the labelling loop), and the `data` actions import-frames / export / import-masks."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import UserError
from ..progress import progress_printer
from .argtypes import device, int_list, positive_int, unit_float


def _progress(done: int, total: int, msg: str) -> None:
    """A rewritten line on a terminal, a plain line every 10 s in a log file (engine.progress)."""
    _PRINTER(done, total, msg[:80])


_PRINTER = progress_printer()


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("suggest", help="rank unlabelled frames to label next (diversity, + uncertainty with a classifier)")
    s.add_argument("--run", required=True, help="run directory or guided-diffusion .pt")
    s.add_argument("--data", required=True, help="folder data set whose unlabelled frames are ranked")
    s.add_argument("--classifier", help="combine its uncertainty with diversity (must be fitted on --run)")
    s.add_argument("--n", type=positive_int, default=10, help="how many frames to suggest")
    s.add_argument("--steps", type=int_list, help="timesteps of the pooled features (default: the classifier's, else 50)")
    s.add_argument("--blocks", type=int_list, help="decoder blocks (default: the classifier's, else the run's default set)")
    s.add_argument("--json", help="also write the report here")
    s.add_argument("--cache-dir", help="root of the feature cache (default: as fit's --cache-dir)")
    s.add_argument("--no-cache", action="store_true", help="compute every feature, read and write no cache")
    s.add_argument("--device", type=device, default="cpu", help="torch device: cpu, cuda, cuda:N or mps")
    s.set_defaults(func=run_suggest, parser=s)

    r = sub.add_parser("refit", help="fit a new classifier on the grown train split; report test mIoU before → after")
    r.add_argument("--data", required=True, help="folder data set with the grown train split and a labelled test split")
    r.add_argument("--classifier", required=True, help="the current classifier (its run, features and settings are reused)")
    r.add_argument("--out", required=True, help="directory of the new classifier (refit.json is written there too)")
    r.add_argument("--members", type=positive_int, help="ensemble members (default: the current classifier's)")
    r.add_argument("--epochs", type=positive_int, help="most epochs per member (default: the current classifier's)")
    r.add_argument("--cache-dir", help="root of the feature cache (default: as fit's --cache-dir)")
    r.add_argument("--no-cache", action="store_true", help="compute every feature, read and write no cache")
    r.add_argument("--device", type=device, default="cpu", help="torch device: cpu, cuda, cuda:N or mps")
    r.set_defaults(func=run_refit)


def register_data(dsub: argparse._SubParsersAction) -> None:
    """The `data` actions of the labelling loop (called by data_cmd.register)."""
    from ..data.export_formats import FORMATS
    from ..data.import_masks import IMPORT_FORMATS
    from ..data.importing import DEFAULT_THRESHOLD

    f = dsub.add_parser("import-frames", help="import a folder of frames (recursive, any size/format) as unlabelled frames")
    f.add_argument("src", metavar="SRC", help="folder of frames (searched recursively; PNG / JPEG / TIFF)")
    f.add_argument("out", metavar="OUT", help="folder data set to write or --append to")
    f.add_argument("--classes", help="classes.json to use (default: the study's five cataract classes)")
    f.add_argument("--class-names", help="comma-separated class names instead of --classes (colours assigned)")
    f.add_argument("--dedup", type=unit_float, default=DEFAULT_THRESHOLD,
                   help="skip a frame whose 32x32 grey thumbnail differs from any kept one by at most this mean "
                        "absolute difference (0..1, as import-video; 0 = keep every frame)")
    f.add_argument("--append", action="store_true", help="add to an existing data set (deduplicated against it)")
    f.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    f.set_defaults(func=run_import_frames)

    e = dsub.add_parser("export", help="export the labelled frames as COCO, CVAT masks or an nnU-Net v2 raw data set")
    e.add_argument("data", metavar="DATA", help="folder data set to export")
    e.add_argument("--format", required=True, choices=FORMATS, help="coco, CVAT masks or an nnU-Net v2 raw data set")
    e.add_argument("out", metavar="OUT", help="directory to write")
    e.add_argument("--dataset-id", type=positive_int, default=501, help="nnunet: three-digit dataset id")
    e.add_argument("--dataset-name", default="DiffSeg", help="nnunet: dataset name")
    e.set_defaults(func=run_export)

    m = dsub.add_parser("import-masks", help="read a CVAT mask export or COCO annotations into the folder format")
    m.add_argument("src", help="CVAT export folder, or COCO folder / annotations JSON")
    m.add_argument("out", metavar="OUT", help="folder data set to write")
    m.add_argument("--format", required=True, choices=IMPORT_FORMATS, help="what SRC holds")
    m.add_argument("--images", help="folder of the images, when not inside SRC")
    m.set_defaults(func=run_import_masks)


def class_table(args: argparse.Namespace):
    """The class table asked for at import: --classes file, --class-names list, or None (default)."""
    from ..data.classes import ClassTable
    from ..data.import_masks import _default_colour

    if args.classes and args.class_names:
        raise UserError("give --classes or --class-names, not both")
    if args.classes:
        return ClassTable.from_json(args.classes)
    if args.class_names:
        names = [n.strip() for n in args.class_names.split(",") if n.strip()]
        return ClassTable.from_pairs([(n, _default_colour(i)) for i, n in enumerate(names)])
    return None


def run_import_frames(args: argparse.Namespace) -> int:
    from ..data.importing import import_frames

    report = import_frames(args.src, args.out, class_table(args), args.dedup, args.append,
                           None if args.no_progress else _progress)
    for src, why in report.skipped:
        print(f"skipped {src}: {why}", file=sys.stderr)
    for src, kept, dist in report.duplicates:
        print(f"near-duplicate {src}: like {kept} (mean thumbnail difference {dist:.4f})", file=sys.stderr)
    for line in report.errors:
        print(f"error: {line}", file=sys.stderr)
    print(json.dumps(report.to_dict()))
    return 0 if report.written else 2


def run_export(args: argparse.Namespace) -> int:
    from ..data.export_formats import export_dataset

    kw = {"dataset_id": args.dataset_id, "name": args.dataset_name} if args.format == "nnunet" else {}
    print(json.dumps(export_dataset(args.data, args.format, args.out, **kw)))
    return 0


def run_import_masks(args: argparse.Namespace) -> int:
    from ..data.import_masks import import_masks

    print(json.dumps(import_masks(args.src, args.format, args.out, args.images)))
    return 0


def run_suggest(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..segmentation.classifier import load_classifier
    from ..data.folder import open_dataset
    from ..segmentation.features import default_cache
    from ..models.run import load_run
    from ..labelling.suggest import ranking_spec, suggest, write_report
    from .argtypes import check_blocks, check_timesteps

    run = load_run(args.run, args.device)
    cache = None if args.no_cache else default_cache(run, args.cache_dir)
    clf = None
    if args.classifier:
        clf = load_classifier(args.classifier, run.device, run=run, cache_dir=args.cache_dir,
                              use_cache=not args.no_cache)
    base = ranking_spec(run, clf)
    # the classifier's own spec (noises, RGB window) with any --steps/--blocks override
    spec = replace(base, steps=tuple(args.steps or base.steps), blocks=tuple(args.blocks or base.block_list))
    check_timesteps(args.parser, list(spec.steps), run.diffusion.num_timesteps)
    check_blocks(args.parser, list(spec.block_list), len(run.model.output_blocks))
    report = suggest(run, open_dataset(args.data), args.n, spec, cache, clf, _progress)
    if args.json:
        write_report(report, args.json)
    print(json.dumps(report, indent=1))
    return 0


def run_refit(args: argparse.Namespace) -> int:
    from ..labelling.refit import refit

    report = refit(args.data, args.classifier, args.out, args.members, args.epochs, args.cache_dir,
                   not args.no_cache, _progress, device=args.device)
    print(json.dumps({k: report[k] for k in ("before", "after", "n_train_before", "n_train_after", "classifier_after")}))
    return 0
