"""`fit`, `evaluate`, `sweep`, `segment`, `pca`: the label-efficient segmentation steps from a shell."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from ..atomic import json_text
from .argtypes import (MAX_EPOCHS, MAX_FRAMES, MAX_LABEL_SIZE, MAX_MEMBERS, MAX_N_NOISE, MAX_PIXEL_BATCH, bounded_int,
                       check_blocks, check_timesteps, device, int_list, positive_int, unit_float)


def _progress(done: int, total: int, msg: str) -> None:
    print(f"\r[{done}/{total}] {msg}".ljust(70), end="", file=sys.stderr, flush=True)
    if done == total:
        print(file=sys.stderr)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit a pixel-classifier ensemble on diffusion features of the labelled frames")
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int_list, default=None, help="diffusion timesteps, e.g. 50,150,250 (default "
                   "50,150,250; with --recipe auto: the candidates, default 20,50,150,250)")
    p.add_argument("--blocks", type=int_list, default=None, help="decoder blocks, e.g. 5,6,7,8,12 (default: the run's "
                   "recommended set; with --recipe auto: the candidates, default every block)")
    p.add_argument("--out", required=True, help="classifier directory to write")
    p.add_argument("--recipe", choices=["manual", "auto"], default="manual",
                   help="auto: choose timesteps and blocks by k-fold cross-validation on the train frames "
                        "(greedy search, engine/recipe_search.py); test frames are never loaded")
    p.add_argument("--folds", type=positive_int, default=4, help="cross-validation folds (--recipe auto)")
    p.add_argument("--cv-seed", type=int, default=0, help="seed of the fold assignment (--recipe auto)")
    p.add_argument("--search-seconds", type=float, default=600.0,
                   help="time budget of the auto search; the best recipe found so far is used when it runs out")
    p.add_argument("--technique-seconds", type=float, default=900.0,
                   help="time budget of the auto technique search (after timesteps and blocks)")
    p.add_argument("--max-steps", type=positive_int, default=3, help="auto: at most this many timesteps")
    p.add_argument("--max-blocks", type=positive_int, default=4, help="auto: at most this many blocks")
    p.add_argument("--sweep", help="auto: reuse the cell scores of a cross-validated sweep JSON (same run and folds)")
    p.add_argument("--split", default="train")
    p.add_argument("--arch", choices=["ddpm", "study"], default="ddpm")
    p.add_argument("--members", type=bounded_int(1, MAX_MEMBERS, "each member holds its own D×h first layer"), default=10)
    p.add_argument("--epochs", type=bounded_int(1, MAX_EPOCHS), default=8)
    p.add_argument("--batch-size", type=bounded_int(1, MAX_PIXEL_BATCH, "pixels gathered per step"), default=512)
    p.add_argument("--class-balanced", action="store_true")
    p.add_argument("--noise-seed", type=int, default=0)
    p.add_argument("--n-noise", type=bounded_int(1, MAX_N_NOISE, "one UNet pass per seed"), default=1,
                   help="average activations over this many noise seeds")
    p.add_argument("--label-size", type=bounded_int(1, MAX_LABEL_SIZE, "masks of every training frame are held at once"),
                   help="mask resolution for training (default: model size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flip-tta", action="store_true", help="predict = ensemble over the frame and its mirror")
    p.add_argument("--self-train", type=int, default=0, metavar="N",
                   help="pseudo-label N unlabelled pool frames with the fitted ensemble and refit on both")
    p.add_argument("--pseudo-threshold", type=float, default=0.9, help="self-training: min mean max probability")
    p.add_argument("--pool", help="folder data set whose unlabeled split is the self-training pool (default: --data's "
                                  "unlabeled split; test frames are never used)")
    p.add_argument("--max-pool", type=positive_int, default=200, help="at most this many pool frames are read")
    p.add_argument("--techniques", default=None,
                   help="--recipe auto: techniques tried greedily by CV after timesteps and blocks (default "
                        "n_noise,flip_tta,class_balanced,self_train; self_train only when a pool exists); '' for none")
    _common(p)
    p.set_defaults(func=run_fit, parser=p)

    e = sub.add_parser("evaluate", help="score a classifier on a labelled split")
    e.add_argument("--classifier", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="test")
    e.add_argument("--json", required=True, help="metrics JSON to write")
    e.add_argument("--reference-metric", action="store_true",
                   help="ddpm-segmentation's convention (absent classes 0, ignore not masked in unions)")
    _common(e)
    e.set_defaults(func=run_evaluate)

    s = sub.add_parser("sweep", help="mIoU grid over decoder blocks × timesteps (one classifier per cell)")
    s.add_argument("--run", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--steps", type=int_list, default=[20, 50, 150, 250])
    s.add_argument("--blocks", type=int_list, default=None, help="default: every decoder block")
    s.add_argument("--json", required=True)
    s.add_argument("--split", choices=["cv", "test"], default="cv",
                   help="cv (default): k-fold cross-validation over the labelled train frames, safe for choosing a "
                        "recipe; test: score on the first --max-test test frames (reporting only)")
    s.add_argument("--folds", type=positive_int, default=4, help="cross-validation folds (--split cv)")
    s.add_argument("--cv-seed", type=int, default=0, help="seed of the fold assignment")
    s.add_argument("--max-test", type=positive_int, default=30, help="--split test: frames scored")

    s.add_argument("--members", type=bounded_int(1, MAX_MEMBERS, "each member holds its own D×h first layer"), default=None,
                   help="ensemble size per fit (default: 1 per fold with --split cv, 2 with --split test)")
    s.add_argument("--epochs", type=bounded_int(1, MAX_EPOCHS), default=3)
    _common(s)
    s.set_defaults(func=run_sweep, parser=s)

    g = sub.add_parser("segment", help="segment image files with a fitted classifier")
    g.add_argument("--classifier", required=True)
    g.add_argument("images", nargs="+")
    g.add_argument("--out", required=True)
    g.add_argument("--opacity", type=unit_float, default=0.5)
    g.add_argument("--review-percent", type=float, default=10.0,
                   help="flag frames for review whose uncertainty is in the top P %% of typical frames (default 10)")
    _common(g)
    g.set_defaults(func=run_segment)

    c = sub.add_parser("pca", help="PCA RGB maps of one block at one timestep for a few frames")
    c.add_argument("--run", required=True)
    c.add_argument("--data", required=True)
    c.add_argument("--step", type=int, required=True)
    c.add_argument("--block", type=int, required=True)
    c.add_argument("--split", default="test")
    c.add_argument("--n", type=bounded_int(1, MAX_FRAMES), default=6)
    c.add_argument("--out", required=True, help="PNG grid: frames, native PCA, upsampled PCA")
    _common(c)
    c.set_defaults(func=run_pca, parser=c)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", help="feature cache directory (default: RUN/feature_cache)")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:N or mps")


def _run_and_cache(args: argparse.Namespace):
    from ..features import default_cache
    from ..run import load_run

    run = load_run(args.run, args.device)
    cache = None if args.no_cache else default_cache(run, args.cache_dir)
    return run, cache


def default_blocks(run) -> list[int]:
    """The paper's blocks 5,6,7,8,12 for an 18-block UNet; otherwise the blocks at the same relative depths."""
    n = len(run.model.output_blocks)
    if n == 18:
        return [5, 6, 7, 8, 12]
    return sorted({min(n - 1, round(b * (n - 1) / 17)) for b in (5, 6, 7, 8, 12)})


def run_fit(args: argparse.Namespace) -> int:
    from ..atomic import check_replaceable
    from ..classifier import CLASSIFIER_FILES
    from ..output_lock import OutputLock

    check_replaceable(args.out, CLASSIFIER_FILES, "--out")  # before training, not after it
    with OutputLock(args.out):  # a second fit on the same --out is refused, not interleaved
        return _fit(args)


def _fit(args: argparse.Namespace) -> int:
    from ..atomic import write_json_atomic
    from ..classifier import fit_classifier
    from ..classifier_training import FitConfig
    from ..data.folder import FolderDataset
    from ..features import FeatureSpec

    run, cache = _run_and_cache(args)
    ds = FolderDataset(args.data)
    search, pool = None, None
    t0 = time.time()
    if args.recipe == "auto":
        from ..recipe_search import search_recipe

        cand_steps = args.steps if args.steps is not None else [20, 50, 150, 250]
        cand_blocks = args.blocks if args.blocks is not None else list(range(len(run.model.output_blocks)))
        check_timesteps(args.parser, cand_steps, run.diffusion.num_timesteps)
        check_blocks(args.parser, cand_blocks, len(run.model.output_blocks))
        sweep = None
        if args.sweep:
            try:
                sweep = json.loads(Path(args.sweep).read_text())
            except (OSError, json.JSONDecodeError) as e:
                args.parser.error(f"--sweep {args.sweep}: cannot read ({e})")
        search = search_recipe(run, ds, cand_steps, cand_blocks, cache, args.folds, args.cv_seed,
                               time_budget_s=args.search_seconds, max_steps=args.max_steps,
                               max_blocks=args.max_blocks, sweep=sweep, train_split=args.split, progress=_progress)
        steps, blocks = search["steps"], search["blocks"]
        from ..recipe_search import TECHNIQUES, search_techniques

        if args.techniques is None:
            techniques = list(TECHNIQUES)
            try:
                pool = _pool(args, ds, run)
            except ValueError as e:
                logging.getLogger(__name__).warning("self_train not tried: %s", e)
                techniques.remove("self_train")
                pool = None
        else:
            techniques = [t.strip() for t in args.techniques.split(",") if t.strip()]
            pool = _pool(args, ds, run) if "self_train" in techniques else None
        if techniques:
            search["techniques"] = search_techniques(
                run, ds, steps, blocks, techniques, cache, args.folds, args.cv_seed, pool=pool,
                base_cv=search["cv_miou"], time_budget_s=args.technique_seconds,
                train_split=args.split, progress=_progress)
            chosen = search["techniques"]["chosen"]
            args.n_noise = chosen.get("n_noise", args.n_noise)
            args.flip_tta = chosen.get("flip_tta", args.flip_tta)
            args.class_balanced = chosen.get("class_balanced", args.class_balanced)
            args.self_train = chosen.get("self_train", args.self_train)
            search["cv_miou"] = search["techniques"]["cv_miou"]
        print(file=sys.stderr)
    else:
        steps = args.steps if args.steps is not None else [50, 150, 250]
        blocks = args.blocks if args.blocks is not None else default_blocks(run)
        check_timesteps(args.parser, steps, run.diffusion.num_timesteps)
        check_blocks(args.parser, blocks, len(run.model.output_blocks))
    spec = FeatureSpec(tuple(steps), tuple(blocks), args.noise_seed, args.n_noise)
    cfg = FitConfig(arch=args.arch, members=args.members, max_epochs=args.epochs, batch_size=args.batch_size,
                    class_balanced=args.class_balanced, seed=args.seed, flip_tta=args.flip_tta,
                    self_train=args.self_train, pseudo_threshold=args.pseudo_threshold)
    if args.self_train > 0 and pool is None:
        pool = _pool(args, ds, run)
    before = cache.stats() if cache else None
    clf = fit_classifier(run, ds, spec, cfg, args.split, args.label_size, cache, _progress, pool=pool)
    if search is not None:
        clf.stats["recipe_search"] = {k: v for k, v in search.items() if k != "trace"}
    clf.save(args.out)
    if search is not None:
        write_json_atomic(Path(args.out) / "recipe_search.json", search)
    after = cache.stats() if cache else None
    print(json_text({
        "out": args.out, "steps": list(spec.steps), "blocks": list(spec.blocks),
        "cv_miou": None if search is None else round(search["cv_miou"], 4),
        "search_stopped": None if search is None else search["stopped"],
        "feature_dim": clf.model.in_dim, "train_pixels": clf.stats["train_pixels"],
        "feature_seconds": round(clf.stats["feature_seconds"], 2), "train_seconds": round(clf.stats["train_seconds"], 2),
        "total_seconds": round(time.time() - t0, 2),
        "cache": None if cache is None else {"hits": after["hits"] - before["hits"],
                                             "misses": after["misses"] - before["misses"], "dir": str(cache.directory)},
    }))
    return 0


def _pool(args: argparse.Namespace, ds, run):  # noqa: ANN001, ANN202
    """Unlabelled pool frames for self-training (never a test frame: engine/self_training.pool_frames)."""
    from ..self_training import pool_frames

    return pool_frames(ds, run.image_size, args.pool, args.max_pool)


def run_evaluate(args: argparse.Namespace) -> int:
    from ..atomic import write_json_atomic
    from ..classifier import load_classifier
    from ..data.folder import FolderDataset
    from ..evaluation import evaluate_classifier

    from ..output_lock import OutputLock

    clf = load_classifier(args.classifier, device=args.device, cache_dir=args.cache_dir, use_cache=not args.no_cache)
    with OutputLock(args.json):
        result = evaluate_classifier(clf, FolderDataset(args.data), args.split, args.reference_metric, _progress)
        write_json_atomic(args.json, result)
    print(json_text({"miou": result["miou"], "miou_ci95": [result["miou_ci95"]["lo"], result["miou_ci95"]["hi"]],
                      "per_class_iou": result["per_class_iou"],
                      "pixel_accuracy": result["pixel_accuracy"], "json": args.json}))
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from ..output_lock import OutputLock

    with OutputLock(args.json):  # a second sweep writing the same JSON is refused
        return _sweep(args)


def _sweep(args: argparse.Namespace) -> int:
    from ..atomic import write_bytes_atomic, write_json_atomic
    from ..classifier_training import FitConfig
    from ..data.folder import FolderDataset
    from ..evaluation import sweep, sweep_figure

    run, cache = _run_and_cache(args)
    blocks = args.blocks if args.blocks is not None else list(range(len(run.model.output_blocks)))
    check_timesteps(args.parser, args.steps, run.diffusion.num_timesteps)
    check_blocks(args.parser, blocks, len(run.model.output_blocks))
    if args.split == "cv":
        cfg = FitConfig(members=args.members or 1, max_epochs=args.epochs, max_pixels=30_000)
    else:
        cfg = FitConfig(members=args.members or 2, max_epochs=args.epochs, max_pixels=60_000)
    result = sweep(run, FolderDataset(args.data), args.steps, blocks, cfg, cache, max_test=args.max_test,
                   progress=_progress, mode=args.split, folds=args.folds, cv_seed=args.cv_seed)

    write_json_atomic(args.json, result)
    html = Path(args.json).with_suffix(".html")
    # plotly.js inlined (~4.7 MB): the page must open offline, with nothing fetched at view time
    write_bytes_atomic(html, sweep_figure(result).to_html(include_plotlyjs=True, full_html=True).encode())
    print(json_text({"best": result["best"], "scored_on": result["scored_on"], "seconds": round(result["seconds"], 1), "json": args.json,
                      "html": str(html)}))
    return 0


def run_segment(args: argparse.Namespace) -> int:
    from ..classifier import load_classifier
    from ..output_lock import OutputLock
    from ..safe_names import safe_stem, unique_stems
    from ..segment_outputs import plain_summary, segment_file
    from ..uncertainty.familiarity import load_for_run

    if not 0 <= args.review_percent <= 100:
        print(f"error: --review-percent must be within 0..100, got {args.review_percent}", file=sys.stderr)
        return 2
    clf = load_classifier(args.classifier, device=args.device, cache_dir=args.cache_dir, use_cache=not args.no_cache)
    familiarity = load_for_run(clf.run)
    out, failed = Path(args.out), 0
    stems = unique_stems([Path(p).name for p in args.images])  # a/x.png, b/x.png, x.jpg → x, x-2, x-3
    with OutputLock(out):
        for path, stem in zip(args.images, stems):
            if stem != safe_stem(Path(path).name):
                print(f"note: {path} → {out / stem}_*.png (its name is taken by an earlier input)", file=sys.stderr)
            try:
                info = segment_file(clf, path, out, stem, args.opacity, familiarity, args.review_percent)
                print(plain_summary(info), file=sys.stderr)
                print(json_text(info))
            except (ValueError, OSError, MemoryError) as e:  # one bad file does not stop the others
                failed += 1
                print(f"error: {_one_line(path, e)}", file=sys.stderr)
            except RuntimeError as e:  # torch's out-of-memory; anything else is a bug and keeps its traceback
                if "memory" not in str(e).lower():
                    raise
                failed += 1
                print(f"error: {_one_line(path, e)}", file=sys.stderr)
    return 2 if failed else 0


def _one_line(path: str, e: BaseException) -> str:
    """The error of one input file on one line (out-of-memory reported as such, naming the file)."""
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and "memory" in str(e).lower()):
        detail = " ".join(str(e).split())[:160] or type(e).__name__
        return f"{path}: not enough memory to segment this frame ({detail})"
    return " ".join(str(e).split())


def run_pca(args: argparse.Namespace) -> int:
    import numpy as np

    from ..analysis import pca_rgb
    from ..classifier import load_labelled
    from ..data.folder import FolderDataset
    from ..data.transforms import from_tensor
    from ..features import FeatureExtractor, FeatureSpec
    from ..training.grid import save_image_grid

    run, cache = _run_and_cache(args)
    check_timesteps(args.parser, [args.step], run.diffusion.num_timesteps, "--step")
    check_blocks(args.parser, [args.block], len(run.model.output_blocks), "--block")
    ds = FolderDataset(args.data)
    images, _, stems = load_labelled(ds, args.split, run.image_size, run.image_size)
    images = images[: args.n]
    maps = FeatureExtractor(run, FeatureSpec((args.step,), (args.block,)), cache).many(images)[0]
    pca = pca_rgb(maps, (run.image_size, run.image_size))
    native_up = np.repeat(np.repeat(pca.native, run.image_size // pca.native.shape[1], 1), run.image_size // pca.native.shape[2], 2)
    frames = np.stack([from_tensor(im) for im in images])
    save_image_grid(np.concatenate([frames, native_up, pca.upsampled]), args.out, ncol=len(images))
    print(json_text({"out": args.out, "explained_variance_ratio": pca.explained_variance_ratio.round(4).tolist(),
                      "stems": stems[: args.n]}))
    return 0
