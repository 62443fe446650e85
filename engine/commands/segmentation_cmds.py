"""`fit`, `evaluate`, `sweep`, `segment`, `pca`: the label-efficient segmentation steps from a shell."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..atomic import json_text
from ..errors import UserError
from ..segmentation.feature_cache import CACHE_ENV
from ..segmentation.augmentation import MAX_COPIES
from ..segmentation.features import MAX_RGB_WINDOW
from ..progress import progress_printer
from .argtypes import (MAX_EPOCHS, MAX_FRAMES, MAX_LABEL_SIZE, MAX_MEMBERS, MAX_N_NOISE, batch_int, bounded_int,
                       check_blocks, check_timesteps, device, finite_float, int_list, odd_window, positive_int,
                       seed_int, split_name, unit_float)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit a pixel-classifier ensemble on diffusion features of the labelled frames")
    p.add_argument("--run", required=True, help="run directory or guided-diffusion .pt")
    p.add_argument("--data", required=True, help="folder data set with labelled frames")
    p.add_argument("--steps", type=int_list, default=None,
                   help="diffusion timesteps, e.g. 50,150,250 (default: the default recipe's, 50,150,250; with "
                        "--recipe auto: the candidates, default 20,50,150,250)")
    p.add_argument("--blocks", type=int_list, default=None,
                   help="decoder blocks, e.g. 5,6,7,8,12 (default: the default recipe's for this model: 5,6,7,8,12 "
                        "on an 18-block decoder, the same relative depths on others; with --recipe auto: the "
                        "candidates, default every block)")
    p.add_argument("--out", required=True, help="classifier directory to write")
    p.add_argument("--recipe", choices=["manual", "auto"], default="manual",
                   help="manual (default): --steps/--blocks as given; auto: choose timesteps, blocks and techniques "
                        "by k-fold cross-validation on the train frames (greedy search, engine/scoring/recipe_search.py); "
                        "test frames are never loaded")
    p.add_argument("--folds", type=bounded_int(2, 100), default=4, help="cross-validation folds (--recipe auto)")
    p.add_argument("--cv-seed", type=seed_int, default=0, help="seed of the fold assignment (--recipe auto)")
    p.add_argument("--search-seconds", type=finite_float(1.0, 86_400.0), default=600.0,
                   help="time budget of the auto block/timestep search in seconds; the best recipe found so far is "
                        "used when it runs out (default 600)")
    p.add_argument("--technique-seconds", type=finite_float(0.0, 86_400.0), default=900.0,
                   help="time budget of the auto technique search, after timesteps and blocks (default 900)")
    p.add_argument("--max-steps", type=bounded_int(1, 20), default=3, help="--recipe auto: at most this many timesteps")
    p.add_argument("--max-blocks", type=bounded_int(1, 64), default=4, help="--recipe auto: at most this many blocks")
    p.add_argument("--sweep", help="--recipe auto: reuse the cell scores of a cross-validated sweep JSON (same run, "
                                   "folds and fold seed)")
    p.add_argument("--split", type=split_name, default="train", help="labelled split to fit on")
    p.add_argument("--arch", choices=["ddpm", "study"], default="ddpm",
                   help="pixel MLP: ddpm = D→128→32→C (ddpm-segmentation), study = D→256→128→32→C")
    p.add_argument("--members", type=bounded_int(1, MAX_MEMBERS, "each member holds its own D×h first layer"), default=10,
                   help="ensemble members")
    p.add_argument("--epochs", type=bounded_int(1, MAX_EPOCHS), default=8, help="most epochs per member (early stopping)")
    p.add_argument("--batch-size", type=batch_int, default=512, help="pixels per optimiser step")
    p.add_argument("--class-balanced", action="store_true", help="weight the loss by inverse class frequency")
    p.add_argument("--noise-seed", type=seed_int, default=0, help="seed of the one noise shared by every t and image")
    p.add_argument("--n-noise", type=bounded_int(1, MAX_N_NOISE, "one UNet pass per seed"), default=1,
                   help="average activations over this many noise seeds")
    p.add_argument("--rgb-window", type=odd_window, default=0, metavar="K",
                   help="also give every pixel the frame's own RGB values in its K×K window (K odd, up to "
                        f"{MAX_RGB_WINDOW}; default 0 = diffusion activations only)")
    p.add_argument("--label-size", type=bounded_int(1, MAX_LABEL_SIZE, "masks of every training frame are held at once"),
                   help="mask resolution for training (default: model size)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the members' initialisation and pixel sampling")
    p.add_argument("--flip-tta", action="store_true",
                   help="test-time flip averaging: predict with the ensemble over the frame and its mirror")
    p.add_argument("--self-train", type=bounded_int(0, MAX_FRAMES), default=0, metavar="N",
                   help="self-training: pseudo-label N unlabelled pool frames with the fitted ensemble and refit on "
                        "both (default 0 = off)")
    p.add_argument("--pseudo-threshold", type=finite_float(0.0, 1.0), default=0.9,
                   help="self-training: least mean max probability for a pixel to keep its pseudo-label")
    p.add_argument("--augment", type=bounded_int(0, MAX_COPIES, "each copy's features are held in memory"), default=0,
                   metavar="K", help="also fit on K augmented copies of each labelled frame (warped, mirrored every other "
                                     "copy, colour-jittered; seeded by --seed; default 0 = off)")
    p.add_argument("--pool", help="folder data set whose unlabeled split is the self-training pool (default: --data's "
                                  "unlabeled split; test frames are never used)")
    p.add_argument("--max-pool", type=bounded_int(1, 100_000), default=200, help="at most this many pool frames are read")
    p.add_argument("--techniques", default=None,
                   help="--recipe auto: techniques tried greedily by CV after timesteps and blocks (default "
                        "n_noise,flip_tta,rgb_window,class_balanced,augment,self_train, tried in that order; self_train only "
                        "when a pool exists); '' for none")
    _common(p)
    p.set_defaults(func=run_fit, parser=p)

    e = sub.add_parser("evaluate", help="score a classifier on a labelled split")
    e.add_argument("--classifier", required=True, help="classifier directory written by fit")
    e.add_argument("--data", required=True, help="folder data set with labelled frames")
    e.add_argument("--split", type=split_name, default="test", help="labelled split to score")
    e.add_argument("--json", required=True, help="metrics JSON to write")
    e.add_argument("--reference-metric", action="store_true",
                   help="ddpm-segmentation's convention (absent classes 0, ignore not masked in unions)")
    _common(e)
    e.set_defaults(func=run_evaluate)

    s = sub.add_parser("sweep", help="mIoU grid over decoder blocks × timesteps (one classifier per cell)")
    s.add_argument("--run", required=True, help="run directory or guided-diffusion .pt")
    s.add_argument("--data", required=True, help="folder data set with labelled frames")
    s.add_argument("--steps", type=int_list, default=[20, 50, 150, 250], help="timesteps (grid columns)")
    s.add_argument("--blocks", type=int_list, default=None, help="decoder blocks (grid rows; default: every block)")
    s.add_argument("--json", required=True, help="grid JSON to write (and an HTML heatmap next to it)")
    s.add_argument("--split", choices=["cv", "test"], default="cv",
                   help="cv (default): k-fold cross-validation over the labelled train frames, safe for choosing a "
                        "recipe; test: fit on train, score on the first --max-test test frames (reporting only)")
    s.add_argument("--folds", type=bounded_int(2, 100), default=4, help="cross-validation folds (--split cv)")
    s.add_argument("--cv-seed", type=seed_int, default=0, help="seed of the fold assignment (--split cv)")
    s.add_argument("--max-test", type=positive_int, default=30, help="--split test: score each cell on the first N test frames")
    s.add_argument("--members", type=bounded_int(1, MAX_MEMBERS, "each member holds its own D×h first layer"), default=None,
                   help="ensemble members per cell (default: 1 per fold with --split cv, 2 with --split test)")
    s.add_argument("--epochs", type=bounded_int(1, MAX_EPOCHS), default=3, help="most epochs per cell")
    _common(s)
    s.set_defaults(func=run_sweep, parser=s)

    g = sub.add_parser("segment", help="segment image files with a fitted classifier")
    g.add_argument("--classifier", required=True, help="classifier directory written by fit")
    g.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (PNG / JPEG / TIFF, any size; e.g. assets/examples/*.png)")
    g.add_argument("--out", required=True,
                   help="folder for <stem>_mask.png (indexed), _color.png, _overlay.png, _uncertainty.png, labelmap.txt")
    g.add_argument("--opacity", type=unit_float, default=0.5, help="class colour opacity in the overlay, 0..1")
    g.add_argument("--review-percent", type=float, default=10.0,
                   help="flag frames for review whose uncertainty is in the top P %% of typical frames (default 10)")
    _common(g)
    g.set_defaults(func=run_segment)

    c = sub.add_parser("pca", help="PCA RGB maps of one block at one timestep for a few frames")
    c.add_argument("--run", required=True, help="run directory or guided-diffusion .pt")
    c.add_argument("--data", required=True, help="folder data set")
    c.add_argument("--step", type=int, required=True, help="diffusion timestep t")
    c.add_argument("--block", type=int, required=True, help="decoder block (output_blocks[i])")
    c.add_argument("--split", type=split_name, default="test", help="split to take frames from")
    c.add_argument("--n", type=bounded_int(1, MAX_FRAMES), default=6, help="number of frames")
    c.add_argument("--out", required=True, help="PNG grid: frames, native PCA, upsampled PCA")
    _common(c)
    c.set_defaults(func=run_pca, parser=c)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", help=f"root of the feature cache, shared with the dashboard: features of a run go "
                                       f"to ROOT/<its weights hash> (default: ${CACHE_ENV} if set, else the per-user "
                                       f"cache directory, ~/.cache/diffseg-studio/features on Linux)")
    p.add_argument("--no-cache", action="store_true", help="compute every feature, read and write no cache")
    p.add_argument("--device", type=device, default="cpu", help="torch device: cpu, cuda, cuda:N or mps")


def _run_and_cache(args: argparse.Namespace):
    from ..segmentation.features import default_cache
    from ..models.run import load_run

    run = load_run(args.run, args.device)
    cache = None if args.no_cache else default_cache(run, args.cache_dir)
    return run, cache


def run_fit(args: argparse.Namespace) -> int:
    from ..artefacts import CLASSIFIER, check_output_dir
    from ..atomic import check_replaceable
    from ..segmentation.classifier import CLASSIFIER_FILES
    from ..output_lock import OutputLock

    check_output_dir(args.out, CLASSIFIER)  # a run, data set or method folder is named as such
    check_replaceable(args.out, CLASSIFIER_FILES, "--out")  # before training, not after it
    with OutputLock(args.out):  # a second fit on the same --out is refused, not interleaved
        return _fit(args)


def _fit(args: argparse.Namespace) -> int:
    from ..segmentation.classifier import fit_classifier
    from ..segmentation.classifier_training import FitConfig
    from ..data.folder import open_dataset
    from ..segmentation.features import default_spec

    run, cache = _run_and_cache(args)
    ds = open_dataset(args.data)
    search, pool = None, None
    t0 = time.time()
    recipe = default_spec(run)
    # the ensemble fit without techniques: the auto search scores techniques with it (not the block search's
    # 1-member fit: inputs a technique adds, 3 noises or the RGB window, need that capacity); then the fit itself
    plain_fit = FitConfig(arch=args.arch, members=args.members, max_epochs=args.epochs, batch_size=args.batch_size,
                          seed=args.seed, pseudo_threshold=args.pseudo_threshold)
    if args.recipe == "auto":
        from ..scoring.recipe_search import TECHNIQUES, search_recipe, search_techniques

        cand_steps = args.steps if args.steps is not None else [20, 50, 150, 250]
        cand_blocks = args.blocks if args.blocks is not None else list(range(len(run.model.output_blocks)))
        check_timesteps(args.parser, cand_steps, run.diffusion.num_timesteps)
        check_blocks(args.parser, cand_blocks, len(run.model.output_blocks))
        sweep = None
        if args.sweep:
            from ..validation import read_json

            sweep = read_json(Path(args.sweep))
        search = search_recipe(run, ds, cand_steps, cand_blocks, cache, args.folds, args.cv_seed,
                               time_budget_s=args.search_seconds, max_steps=args.max_steps,
                               max_blocks=args.max_blocks, sweep=sweep, train_split=args.split,
                               progress=progress_printer())
        steps, blocks = search["steps"], search["blocks"]
        if args.techniques is None:
            techniques = list(TECHNIQUES)
            try:
                pool = _pool(args, ds, run)
            except UserError as e:
                logging.getLogger(__name__).warning("self_train not tried: %s", e)
                techniques.remove("self_train")
                pool = None
        else:
            techniques = [t.strip() for t in args.techniques.split(",") if t.strip()]
            pool = _pool(args, ds, run) if "self_train" in techniques else None
        if techniques:
            search["techniques"] = search_techniques(
                run, ds, steps, blocks, techniques, cache, args.folds, args.cv_seed, fit_cfg=plain_fit, pool=pool,
                time_budget_s=args.technique_seconds, train_split=args.split, progress=progress_printer())
            chosen = search["techniques"]["chosen"]
            args.n_noise = chosen.get("n_noise", args.n_noise)
            args.flip_tta = chosen.get("flip_tta", args.flip_tta)
            args.class_balanced = chosen.get("class_balanced", args.class_balanced)
            args.self_train = chosen.get("self_train", args.self_train)
            args.augment = chosen.get("augment", args.augment)
            args.rgb_window = chosen.get("rgb_window", args.rgb_window)
            search["cv_miou"] = search["techniques"]["cv_miou"]
    else:
        steps = list(args.steps if args.steps is not None else recipe.steps)
        blocks = list(args.blocks if args.blocks is not None else recipe.block_list)
        check_timesteps(args.parser, steps, run.diffusion.num_timesteps)
        check_blocks(args.parser, blocks, len(run.model.output_blocks))
    spec = replace(recipe, steps=tuple(steps), blocks=tuple(blocks), noise_seed=args.noise_seed, n_noise=args.n_noise,
                   rgb_window=args.rgb_window)
    cfg = replace(plain_fit, class_balanced=args.class_balanced, flip_tta=args.flip_tta, self_train=args.self_train,
                  augment=args.augment)
    if args.self_train > 0 and pool is None:
        pool = _pool(args, ds, run)
    before = cache.stats() if cache else None
    clf = fit_classifier(run, ds, spec, cfg, args.split, args.label_size, cache, progress_printer(), pool=pool)
    if search is not None:
        clf.stats["recipe_search"] = {k: v for k, v in search.items() if k != "trace"}
        clf.recipe_search = search
    clf.save(args.out)
    after = cache.stats() if cache else {}
    before = before or {}
    print(json_text({
        "out": args.out, "steps": list(spec.steps), "blocks": spec.block_list,
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
    from ..segmentation.self_training import pool_frames

    return pool_frames(ds, run.image_size, args.pool, args.max_pool)


def run_evaluate(args: argparse.Namespace) -> int:
    from ..atomic import write_json_atomic
    from ..segmentation.classifier import load_classifier
    from ..data.folder import open_dataset
    from ..scoring.evaluation import evaluate_classifier

    from ..output_lock import OutputLock

    clf = load_classifier(args.classifier, args.device, cache_dir=args.cache_dir, use_cache=not args.no_cache)
    with OutputLock(args.json):
        result = evaluate_classifier(clf, open_dataset(args.data), args.split, args.reference_metric,
                                     progress_printer())
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
    from ..segmentation.classifier_training import FitConfig
    from ..data.folder import open_dataset
    from ..scoring.evaluation import CV_SWEEP_FIT, SWEEP_MAX_PIXELS, sweep, sweep_figure

    run, cache = _run_and_cache(args)
    blocks = args.blocks if args.blocks is not None else list(range(len(run.model.output_blocks)))
    check_timesteps(args.parser, args.steps, run.diffusion.num_timesteps)
    check_blocks(args.parser, blocks, len(run.model.output_blocks))
    if args.split == "cv":
        cfg = FitConfig(members=args.members or 1, max_epochs=args.epochs, max_pixels=CV_SWEEP_FIT.max_pixels)
    else:
        cfg = FitConfig(members=args.members or 2, max_epochs=args.epochs, max_pixels=SWEEP_MAX_PIXELS)
    result = sweep(run, open_dataset(args.data), args.steps, blocks, cfg, cache, max_test=args.max_test,
                   progress=progress_printer(), mode=args.split, folds=args.folds, cv_seed=args.cv_seed)
    write_json_atomic(args.json, result)
    html = Path(args.json).with_suffix(".html")
    # plotly.js inlined (~4.7 MB): the page must open offline, with nothing fetched at view time
    write_bytes_atomic(html, sweep_figure(result).to_html(include_plotlyjs=True, full_html=True).encode())
    print(json_text({"best": result["best"], "scored_on": result["scored_on"], "seconds": round(result["seconds"], 1),
                     "json": args.json, "html": str(html)}))
    return 0


def run_segment(args: argparse.Namespace) -> int:
    from ..segmentation.classifier import load_classifier
    from ..output_lock import OutputLock
    from ..safe_names import safe_stem, unique_stems
    from ..outputs.segment_outputs import plain_summary, segment_file
    from ..uncertainty.familiarity import load_for_run

    if not 0 <= args.review_percent <= 100:
        print(f"error: --review-percent must be within 0..100, got {args.review_percent}", file=sys.stderr)
        return 2
    clf = load_classifier(args.classifier, args.device, cache_dir=args.cache_dir, use_cache=not args.no_cache)
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
            except (UserError, OSError, MemoryError) as e:  # one bad file does not stop the others (bugs raise)
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

    from ..scoring.analysis import pca_rgb
    from ..segmentation.classifier import load_labelled
    from ..data.folder import open_dataset
    from ..data.transforms import from_tensor
    from ..segmentation.features import FeatureExtractor, FeatureSpec
    from ..training.grid import save_image_grid

    run, cache = _run_and_cache(args)
    check_timesteps(args.parser, [args.step], run.diffusion.num_timesteps, "--step")
    check_blocks(args.parser, [args.block], len(run.model.output_blocks), "--block")
    ds = open_dataset(args.data)
    images, _, stems = load_labelled(ds, args.split, run.image_size, run.image_size)
    images = images[: args.n]
    maps = FeatureExtractor(run, FeatureSpec((args.step,), (args.block,)), cache).many(images)[0]
    pca = pca_rgb(maps, (run.image_size, run.image_size))
    native_up = np.repeat(np.repeat(pca.native, run.image_size // pca.native.shape[1], 1),
                          run.image_size // pca.native.shape[2], 2)
    frames = np.stack([from_tensor(im) for im in images])
    save_image_grid(np.concatenate([frames, native_up, pca.upsampled]), args.out, ncol=len(images))
    print(json_text({"out": args.out, "explained_variance_ratio": pca.explained_variance_ratio.round(4).tolist(),
                      "stems": stems[: args.n]}))
    return 0
