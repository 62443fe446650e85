"""`familiarity`, `calibrate`, `scorecard`: unfamiliar-input detection, calibration and the review scorecard."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import UserError
from ..progress import progress_printer
from .argtypes import device, int_list, positive_int


def _progress(done: int, total: int, msg: str = "") -> None:
    """A rewritten line on a terminal, a plain line every 10 s in a log file (engine.progress)."""
    _PRINTER(done, total, msg)


_PRINTER = progress_printer()


def register(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("familiarity", help="unfamiliar-input detection from the DDPM's denoising errors")
    fs = f.add_subparsers(dest="familiarity_command", required=True, metavar="ACTION")
    fit = fs.add_parser("fit", help="fit the density of denoising-error vectors on the run's unlabelled pool")
    fit.add_argument("--run", required=True, help="run directory whose activations are scored")
    fit.add_argument("--data", required=True, help="folder data set whose unlabeled split is the pool "
                                                   "(the frames the run was pretrained on)")
    fit.add_argument("--max-frames", type=positive_int, default=250, help="pool frames used (evenly spaced)")
    fit.add_argument("--steps", type=int_list, default=None, help="timesteps (default 20,100,300,600)")
    fit.add_argument("--scales", type=int_list, default=None, help="pooling scales (default 1,2,4)")
    fit.add_argument("--noise-seed", type=int, default=0, help="seed of the one noise shared by every t and image")
    fit.add_argument("--folds", type=positive_int, default=5, help="cross-validation folds of the pool")
    fit.add_argument("--flag-percentile", type=float, default=99.0,
                     help="frames further out than this percentile of the pool are called unfamiliar")
    fit.add_argument("--out", help="default: RUN/familiarity.json")
    fit.add_argument("--device", type=device, default="cpu", help="torch device: cpu, cuda, cuda:N or mps")
    fit.set_defaults(func=run_fit)

    sc = fs.add_parser("score", help="how familiar image files look to the run (JSON per file)")
    sc.add_argument("--run", required=True, help="run directory with a fitted familiarity.json")
    sc.add_argument("images", nargs="+", metavar="IMAGE", help="image files to score (e.g. assets/examples/*)")
    sc.add_argument("--device", type=device, default="cpu", help="torch device: cpu, cuda, cuda:N or mps")
    sc.set_defaults(func=run_score)

    ms = fs.add_parser("make-set", help="write the unfamiliar-input test set (PNG files + index.json)")
    ms.add_argument("--data", required=True, help="folder data set whose test frames are degraded")
    ms.add_argument("--out", required=True, help="folder to write the unfamiliar-input PNGs to")
    ms.add_argument("--per-kind", type=positive_int, default=6, help="images per kind of unfamiliar input")
    ms.add_argument("--seed", type=int, default=0, help="random seed of the generated images")
    ms.set_defaults(func=run_make_set)

    c = sub.add_parser("calibrate", help="temperature + review calibration for a classifier (no refit), or the "
                                         "review calibration of a fitted method (e.g. conddiff)")
    target = c.add_mutually_exclusive_group(required=True)
    target.add_argument("--classifier", help="classifier directory (its config.json gets the calibration)")
    target.add_argument("--method", help="fitted method directory (writes review_calibration.json)")
    c.add_argument("--data", help="classifier: folder data set with the labelled train frames")
    c.add_argument("--split", default="train", help="labelled split the temperature is fitted on")
    c.add_argument("--folds", type=positive_int, default=4, help="cross-fitting folds of that split")
    c.add_argument("--pool", help="folder data set whose unlabeled split gives the typical frames "
                                  "(default: --data's unlabeled split)")
    c.add_argument("--max-pool", type=positive_int, default=200, help="typical frames scored (evenly spaced)")
    c.add_argument("--k-max", type=positive_int, default=10, help="conddiff: calibrate K = 1..k-max samples")
    c.add_argument("--cache-dir", help="feature cache directory (default: RUN/feature_cache)")
    c.add_argument("--device", type=device, default="cpu", help="torch device: cpu, cuda, cuda:N or mps")
    c.set_defaults(func=run_calibrate)

    s = sub.add_parser("scorecard", help="add the uncertainty scorecard to an existing compare JSON, from the "
                                         "fitted methods (no retraining)")
    s.add_argument("--compare", required=True, help="compare JSON to update (its .md is rewritten too)")
    s.add_argument("--data", required=True, help="folder data set the report was computed on")
    s.add_argument("--run", help="the DDPM run (ddpm methods, familiarity check)")
    s.add_argument("--methods-dir", help="folder with one fitted method per name (default: each result's dir)")
    s.add_argument("--pool", help="folder data set whose unlabeled split gives the typical frames")
    s.add_argument("--n-typical", type=positive_int, default=60, help="typical pool frames scored per method")
    s.add_argument("--per-kind", type=positive_int, default=4, help="unfamiliar-input set images per kind")
    s.add_argument("--max-test", type=positive_int, help="score only the first N test frames (default: all)")
    s.add_argument("--only", help="comma-separated methods to score (default: every method of the report)")
    s.add_argument("--no-familiarity", action="store_true", help="leave out the run-level familiarity figures")
    s.add_argument("--merge", nargs="+", metavar="PART_JSON",
                   help="instead of computing: copy the scorecards of these partial reports into --compare")
    s.add_argument("--device", type=device, default="cpu", help="torch device: cpu, cuda, cuda:N or mps")
    s.set_defaults(func=run_scorecard)


def _pool(data: str | None, size: int, max_frames: int) -> tuple:
    import torch

    from ..data.folder import open_dataset
    from ..data.transforms import fit_square, to_tensor

    if data is None:
        return None, ""
    ds = open_dataset(data)
    stems = ds.stems("unlabeled")
    if not stems:
        raise UserError(f"{data}: no unlabeled split to use as the pool of typical frames")
    stems = stems[::max(1, len(stems) // max_frames)][:max_frames]
    return torch.stack([to_tensor(fit_square(ds.image(s), size)) for s in stems]), f"{data}, unlabeled split"


def run_fit(args: argparse.Namespace) -> int:
    from ..models.run import load_run
    from ..uncertainty import familiarity as fam

    run = load_run(args.run, args.device)
    d = fam.FamiliaritySpec()
    spec = fam.FamiliaritySpec(tuple(args.steps or d.steps), tuple(args.scales or d.scales), args.noise_seed)
    pool, src = _pool(args.data, run.image_size, args.max_frames)
    model = fam.fit_familiarity(run, pool, spec, args.folds, args.flag_percentile, src,
                                lambda i, n: _progress(i, n, "pool frames"))
    out = model.save(args.out or fam.model_path(args.run))
    print(json.dumps({"out": str(out), "n_pool": len(pool), "features": len(spec.names),
                      "seconds": model.meta["seconds"]}))
    return 0


def run_score(args: argparse.Namespace) -> int:
    from ..data.images import load_image
    from ..models.run import load_run
    from ..uncertainty import familiarity as fam
    from ..uncertainty.scorecard import familiarity_input

    run = load_run(args.run, args.device)
    model, why = fam.load_for_run(run)
    failed = 0
    for path in args.images:
        try:
            image = load_image(path)
        except (ValueError, OSError) as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
            continue
        v = fam.assess_frame(run, familiarity_input(image, run), model, why)
        print(json.dumps({"input": path, **v.to_dict()}))
    return 2 if failed else 0


def run_make_set(args: argparse.Namespace) -> int:
    from ..atomic import write_json_atomic
    from ..data.folder import open_dataset
    from ..data.images import save_png_atomic
    from ..uncertainty.unfamiliar_set import build_set

    ds = open_dataset(args.data)
    frames = [ds.image(s) for s in ds.stems("test")] or [ds.image(s) for s in ds.stems("train")]
    items = build_set(frames, args.per_kind, args.seed)
    out = Path(args.out)
    index = []
    for it in items:
        save_png_atomic(out / "images" / f"{it.name}.png", (it.image * 255).round().astype("uint8"))
        index.append({"name": it.name, "kind": it.kind, "group": it.group})
    write_json_atomic(out / "index.json", {"seed": args.seed, "per_kind": args.per_kind, "images": index})
    print(json.dumps({"out": str(out), "n": len(items)}))
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    if args.classifier:
        return _calibrate_classifier(args)
    return _calibrate_method(args)


def _calibrate_classifier(args: argparse.Namespace) -> int:
    from ..segmentation.classifier import load_classifier
    from ..data.folder import open_dataset
    from ..uncertainty.classifier_calibration import (
        calibrate_classifier,
        save_calibration,
    )

    if not args.data:
        raise UserError("--data is required with --classifier (its labelled train frames give held-out pixels)")
    clf = load_classifier(args.classifier, device=args.device, cache_dir=args.cache_dir)
    ds = open_dataset(args.data)
    pool_src = args.pool or (args.data if ds.stems("unlabeled") else None)
    pool, src = _pool(pool_src, clf.run.image_size, args.max_pool)
    rep = calibrate_classifier(clf, ds, args.split, args.folds, pool, src, _progress)
    save_calibration(clf, args.classifier)
    print(json.dumps({"classifier": args.classifier, "temperature": round(rep["temperature"], 4),
                      "nll_before": round(rep["nll_before"], 4), "nll_after": round(rep["nll_after"], 4),
                      "ece_before": round(rep["ece_before"], 4), "ece_after": round(rep["ece_after"], 4),
                      "split_half_check": rep["split_half_check"],
                      "review_source": (clf.review or {}).get("source")}))
    return 0


def _calibrate_method(args: argparse.Namespace) -> int:
    from ..methods.base import load_standalone
    from ..uncertainty import method_review

    method = load_standalone(args.method, args.device)
    pool, src = _pool(args.pool, method.ctx.image_size, args.max_pool)
    if pool is None:
        raise UserError("--pool is required with --method (a folder data set with an unlabeled split)")
    scores = method_review.typical_scores(method, pool, k_max=args.k_max)
    path = method_review.save(args.method, method_review.calibrations(
        scores, f"{len(pool)} frames of the unlabelled pool ({src})", method_review.frames_digest(pool),
        method_review.score_id(method.name)))
    calibs = method_review.load(args.method, method.name)
    k = int(method.config.get("samples", 5))
    thr = method_review.for_samples(calibs, k)
    print(json.dumps({"method": args.method, "file": str(path), "n_typical": len(pool),
                      "threshold_10pct": None if thr is None else round(thr.threshold(10.0), 5)}))
    return 0


def run_scorecard(args: argparse.Namespace) -> int:
    from ..uncertainty.scorecard_cmd import add_scorecard, merge_scorecards

    if args.merge:
        rep = merge_scorecards(args.compare, args.merge)
    else:
        only = [m.strip() for m in args.only.split(",") if m.strip()] if args.only else None
        rep = add_scorecard(args.compare, args.data, args.run, args.methods_dir, args.pool, args.n_typical,
                            args.per_kind, args.max_test, args.device, lambda m: print(m, file=sys.stderr, flush=True),
                            only, not args.no_familiarity)
    for name, r in rep["methods"].items():
        c = r.get("uncertainty_scorecard") or {}
        rv = c.get("review", {})
        if not c:
            continue
        print(f"{name:12s} ECE {c.get('ece', float('nan')):.3f}  review AUROC {rv.get('auroc_below_median')}  "
              f"AURC {rv.get('aurc')}  unfamiliar AUROC {c.get('unfamiliar_auroc')}")
    print(f"updated {args.compare} (+ .md)")
    return 0
