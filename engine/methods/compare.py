"""`compare`: fit (or load from the cache) every requested method on the same data, score all of them on
the test split with the same metric code, write the JSON (per method: miou, per_class_iou, dice,
pixel_accuracy, confusion, train_seconds, infer_seconds_per_image — the README's "Methods compared"),
a Markdown table (like the study's Table 3) and a side-by-side figure. What is reported per method
follows its capabilities (engine/methods/base.py: sample variance, review score, reference baseline),
never its name.

Cache: WORK/<method>-<config hash>/ (hash of method, config, training data, pool and DDPM checkpoint).
Pool: the data set's unlabeled split; if empty, `pool_dir`'s unlabeled split; else the train
IMAGES without their masks (reported as `pool_source`); test frames are never in a pool.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_json_atomic, write_text_atomic
from ..segmentation.classifier import load_labelled
from ..data.folder import SegDataset, open_dataset
from ..data.transforms import fit_square, to_tensor
from ..errors import DataError, UserError
from ..scoring.metrics import ConfusionMatrix, summarize
from ..scoring.bootstrap import DEFAULT_BOOT, DEFAULT_SEED, bootstrap_miou
from .compare_stats import paired_vs, seed_summary, stats_markdown
from .base import (MethodContext, check_budget, config_hash, get_method, load_method, method_class,
                   method_title, reference_baseline, tensor_digest)

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
DEFAULT_IMAGE_SIZE = 64  # without a run (no ddpm-type method), methods train at this size
PAIRED_REFERENCE = "ddpm"  # the product's method: every other method is tested against it (paired bootstrap)


def load_pool(ds: SegDataset, size: int, pool_dir: str | Path | None = None,
              max_pool: int | None = None) -> tuple[torch.Tensor, str]:
    stems, src = ds.stems("unlabeled"), "unlabeled split"
    if stems:
        src_ds = ds
    elif pool_dir is not None:
        src_ds, src = open_dataset(pool_dir), f"{pool_dir} (unlabeled split)"
        stems = src_ds.stems("unlabeled")
    else:  # never the test frames: pretraining on them would leak the test set into the features
        src_ds, src = ds, "train images only (masks unused): the data set has no unlabelled split; pass --pool"
        stems = ds.stems("train")
    if not stems:
        raise DataError("no images for the unlabelled pool")
    if max_pool:
        stems = stems[:max_pool]
    return torch.stack([to_tensor(fit_square(src_ds.image(s), size)) for s in stems]), src


@dataclass
class ComparisonSetup:
    """What `compare` and the label-count curve share: the data set, the run, the method context, the
    labelled train and test frames (images, masks, stems) at the model's size, and the unlabelled pool."""

    ds: SegDataset
    run: Any
    size: int
    ctx: MethodContext
    train: tuple[torch.Tensor, torch.Tensor, list[str]]
    test: tuple[torch.Tensor, torch.Tensor, list[str]]
    pool: torch.Tensor
    pool_src: str

    @property
    def run_hash(self) -> str | None:
        return self.run.weights_hash if self.run is not None else None

    @classmethod
    def load(cls, data: str | Path, run_path: str | Path | None, methods: Sequence[str], device: str | torch.device,
             pool_dir: str | Path | None = None, max_pool: int | None = None, max_test: int | None = None,
             feature_cache_dir: str | Path | None = None) -> ComparisonSetup:
        classes = {name: method_class(name) for name in methods}  # unknown names fail before any training
        ds = open_dataset(data)
        run = None
        if run_path is not None:
            from ..models.run import load_run

            run = load_run(run_path, device)
        needs_run = [n for n, c in classes.items() if c.uses_run]
        if needs_run and run is None:
            raise UserError(f"{' / '.join(needs_run)} need --run")
        size = run.image_size if run is not None else DEFAULT_IMAGE_SIZE
        ctx = MethodContext(ds.classes, size, device, run, feature_cache(run, feature_cache_dir))
        train = load_labelled(ds, "train", size, size)
        te_img, te_mask, te_stems = load_labelled(ds, "test", size, size)
        if max_test:
            te_img, te_mask, te_stems = te_img[:max_test], te_mask[:max_test], te_stems[:max_test]
        pool, pool_src = load_pool(ds, size, pool_dir, max_pool)
        return cls(ds, run, size, ctx, train, (te_img, te_mask, te_stems), pool, pool_src)


def compare(data: str | Path, run_path: str | Path | None, methods: Sequence[str], json_out: str | Path,
            budget: str = "quick", work: str | Path | None = None, pool_dir: str | Path | None = None,
            figure_frames: int = 4, *, device: str | torch.device, overrides: dict[str, dict[str, Any]] | None = None,
            max_pool: int | None = None, max_test: int | None = None, k_study: Sequence[int] = (),
            k_study_frames: int = 8, k_study_seeds: int = 3, progress: Progress | None = None,
            seeds: Sequence[int] | None = None, boot_seed: int = DEFAULT_SEED,
            feature_cache_dir: str | Path | None = None, seed_methods: Sequence[str] | None = None,
            scorecard: bool = True) -> dict[str, Any]:
    """Fit (or load from the cache) and score `methods` on `data`; everything runs on `device`. With `seeds`,
    every method runs once per seed (mean ± sd) and each is tested against `ddpm` by a paired bootstrap over
    the same test frames (engine/scoring/bootstrap.py); `seed_methods` limits the repeats to those methods (the
    others run once, with the first seed)."""
    check_budget(budget)
    say = progress or (lambda msg: log.info("%s", msg))
    json_out = Path(json_out)
    work = Path(work) if work else json_out.parent / "compare_work"
    setup = ComparisonSetup.load(data, run_path, methods, device, pool_dir, max_pool, max_test, feature_cache_dir)
    ds, run, size, ctx, pool, pool_src, run_hash = (setup.ds, setup.run, setup.size, setup.ctx, setup.pool,
                                                    setup.pool_src, setup.run_hash)
    tr_img, tr_mask, tr_stems = setup.train
    te_img, te_mask, te_stems = setup.test
    digest = tensor_digest(tr_img, tr_mask, pool)
    fig_idx = list(range(min(figure_frames, len(te_img))))
    card_ctx = _scorecard_context(ds, te_stems, pool, pool_src, size, tr_img, tr_mask, run,
                                  per_kind=1 if budget == "tiny" else 4) if scorecard else None
    results: dict[str, Any] = {}
    fig_cols: dict[str, list[np.ndarray]] = {}
    unc_maps: dict[str, list[np.ndarray]] = {}
    frame_cms: dict[str, list[np.ndarray]] = {}  # name → per-seed (N, C, C) per-frame confusion matrices
    seed_list: list[int | None] = list(seeds) if seeds else [None]
    for name in methods:
        per_seed: list[dict[str, Any]] = []
        primary_method: Any = None
        primary_collector: Any = None
        method_seeds = seed_list if seed_methods is None or name in seed_methods else seed_list[:1]
        for si, seed in enumerate(method_seeds):
            primary = si == 0  # the first seed's fit is the one reported in full (review, K study, scorecard)
            m, cached, mdir = fit_or_load(name, ctx, budget, seed_overrides(name, budget, (overrides or {}).get(name, {}), seed),
                                          tr_img, tr_mask, pool, digest, run_hash, work, say)
            if card_ctx is not None and primary:  # the review threshold comes from typical frames, before any test frame
                card_ctx.calibrate_review(m, mdir, say)
            say(f"{name}{'' if seed is None else f' (seed {seed})'}: evaluating {len(te_img)} test frames")
            collector = _collector(ds.classes.num_classes) if card_ctx is not None and primary else None
            if primary:
                primary_method, primary_collector = m, collector
            cm = ConfusionMatrix(ds.classes.num_classes)
            flagged, scores, per_image_cm = [], [], []
            t0 = time.time()
            for i, (img, mask) in enumerate(zip(te_img, te_mask)):
                out = m.predict(img)
                labels = out.labels.numpy()
                cm.update(labels, mask.numpy())
                scores.append(out.score)
                if collector is not None:
                    collector.add(out, mask.numpy())
                per_image_cm.append(ConfusionMatrix(ds.classes.num_classes).update(labels, mask.numpy()))
                if primary and m.review_score:
                    flagged.append(bool(out.extra.get("review")))
                if primary and m.sample_variance and i in fig_idx:
                    unc_maps.setdefault(name, []).append(out.uncertainty["variance"].numpy())
                if primary and i in fig_idx:
                    fig_cols.setdefault(name, []).append(labels.astype(np.uint8))
            infer = (time.time() - t0) / max(len(te_img), 1)
            frame_cms.setdefault(name, []).append(np.stack([c.matrix for c in per_image_cm]))
            res = summarize(cm, ds.classes.names)
            res.update({"train_seconds": float(m.stats.get("train_seconds", 0.0)), "infer_seconds_per_image": infer,
                        "n_test": len(te_img), "cached": cached, "dir": str(mdir), "config": m.config,
                        "miou_ci95": bootstrap_miou(frame_cms[name][-1], seed=boot_seed),
                        "uncertainty": dict(zip(te_stems, scores)) if any(s is not None for s in scores) else None})
            per_seed.append(res)
            if not primary:
                say(f"{name} (seed {seed}): mIoU {res['miou']:.3f}")
                continue
            if m.review_score:
                effective = {**m.config, "review_threshold": m.review_threshold(int(m.config.get("samples", 1)))}
                res["review"] = review_stats(per_image_cm, flagged, te_stems, ds.classes.names, effective,
                                             [float(s or 0.0) for s in scores])
            if m.sample_variance and k_study:
                say(f"{name}: K study {list(k_study)} on {k_study_frames} frames × {k_study_seeds} seeds")
                from ..data.images import save_png_atomic

                n = min(k_study_frames, len(te_img))
                res["k_study"], kfig = k_sample_study(m, te_img[:n], te_mask[:n], ds.classes.names, k_study,
                                                      k_study_seeds)
                res["k_study"]["n_frames"] = n
                save_png_atomic(json_out.with_name(f"{json_out.stem}_{name}_k.png"), kfig)
        if card_ctx is not None and primary_collector is not None:
            per_seed[0]["uncertainty_scorecard"] = card_ctx.finish(primary_method, primary_collector, say)
        results[name] = per_seed[0]
        if seeds:
            results[name]["seeds"] = seed_summary(method_seeds, per_seed)  # type: ignore[arg-type]
        say(f"{name}: mIoU {per_seed[0]['miou']:.3f}")
    baseline = reference_baseline()
    base = results.get(baseline, {}).get("miou") if baseline else None
    report = {"budget": budget, "data": str(data), "run": str(run_path) if run_path else None,
              "image_size": size, "n_train": len(tr_stems), "n_test": len(te_stems), "pool_size": len(pool),
              "pool_source": pool_src, "classes": ds.classes.names, "metric_convention": "ignore-masked, absent classes skipped",
              "methods": results, "baseline": baseline,
              # the key keeps its historical name; it holds Δ mIoU against `baseline` (the UNet)
              "vs_unet": {n: r["miou"] - base for n, r in results.items() if base is not None and n != baseline},
              "seeds": list(seeds) if seeds else None,
              "bootstrap": {"n_boot": DEFAULT_BOOT, "seed": boot_seed, "level": 0.95, "unit": "test frames",
                            "paired": "per-frame confusion matrices summed over seeds"},
              "paired_vs_ddpm": paired_vs(frame_cms, PAIRED_REFERENCE, boot_seed)}
    if card_ctx is not None:
        report["uncertainty"] = {"familiarity": card_ctx.familiarity(say)}
    json_out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(json_out, report)
    write_text_atomic(json_out.with_suffix(".md"), markdown_table(report) + _scorecard_markdown(report))
    fig = side_by_side([te_img[i] for i in fig_idx], [te_mask[i].numpy() for i in fig_idx], fig_cols, unc_maps, ds.classes)
    from ..data.images import save_png_atomic

    save_png_atomic(json_out.with_suffix(".png"), fig)
    return report


# ---- the uncertainty scorecard hook (engine/uncertainty/scorecard.py) ----------------------------------
def _scorecard_context(ds: SegDataset, te_stems: list[str], pool: torch.Tensor, pool_src: str, size: int,
                       tr_img: torch.Tensor, tr_mask: torch.Tensor, run: Any, per_kind: int = 4):  # noqa: ANN202
    from ..uncertainty.scorecard import ScorecardContext

    return ScorecardContext.build(pool, pool_src, [ds.image(s) for s in te_stems], size, (tr_img, tr_mask), run,
                                  per_kind=per_kind)


def _collector(num_classes: int):  # noqa: ANN202
    from ..uncertainty.scorecard import Collector

    return Collector(num_classes)


def _scorecard_markdown(report: dict[str, Any]) -> str:
    from ..uncertainty.scorecard import markdown

    return markdown(report)


def feature_cache(run: Any, directory: str | Path | None) -> Any:
    """The DDPM feature cache in `directory` (opt-in: None without a run or a directory)."""
    if run is None or directory is None:
        return None
    from ..segmentation.features import default_cache

    return default_cache(run, directory)


def seed_overrides(name: str, budget: str, given: dict[str, Any], seed: int | None) -> dict[str, Any]:
    """The method's config overrides for one seed: `seed` (and `noise_seed`, ddpm's feature noise) set to it."""
    if seed is None:
        return dict(given)
    cfg = method_class(name).default_config(budget).to_dict()
    out = {**given, "seed": int(seed)}
    if "noise_seed" in cfg:
        out["noise_seed"] = int(seed)
    return out


def fit_or_load(name: str, ctx: MethodContext, budget: str, overrides: dict[str, Any], tr_img: torch.Tensor,
                tr_mask: torch.Tensor, pool: torch.Tensor, digest: str, run_hash: str | None, work: Path,
                say: Progress) -> tuple[Any, bool, Path]:
    """A fitted method from WORK/<name>-<hash> when cached, else trained now and saved there."""
    m = get_method(name, ctx, budget, **overrides)
    # inference-only settings (conddiff's K, steps, review threshold) do not change the trained weights
    train_cfg = {k: v for k, v in m.config.items() if k not in m.inference_keys}
    key = config_hash(name, train_cfg, digest, run_hash if m.uses_run else None)
    mdir = work / f"{name}-{key}"
    cached = (mdir / "method.json").is_file()
    if cached:
        say(f"{name}: cached at {mdir}")
        wanted = {k: m.config[k] for k in m.inference_keys if k in m.config}
        m = load_method(mdir, ctx)
        if any(m.config.get(k) != v for k, v in wanted.items()):
            m.cfg = m.cfg.with_overrides(**wanted)
            m.save(mdir)
    else:
        say(f"{name}: training ({budget})")
        m.fit(pool, tr_img, tr_mask, mdir)
        m.save(mdir)
    return m, cached, mdir


def review_stats(cms: list[ConfusionMatrix], flagged: list[bool], stems: list[str], names: list[str],
                 config: dict[str, Any], scores: list[float] | None = None) -> dict[str, Any]:
    """How many test frames the review flag catches, and the mIoU of flagged vs unflagged frames."""
    def pooled(sel: list[int]) -> float | None:
        if not sel:
            return None
        cm = ConfusionMatrix(len(names))
        for i in sel:
            cm.matrix += cms[i].matrix
        return summarize(cm, names)["miou"]

    f = [i for i, v in enumerate(flagged) if v]
    u = [i for i, v in enumerate(flagged) if not v]
    out = {"threshold": config["review_threshold"], "samples": config["samples"],
           "sampling_steps": config["sampling_steps"], "n_flagged": len(f), "n_unflagged": len(u),
           "miou_flagged": pooled(f), "miou_unflagged": pooled(u), "flagged": [stems[i] for i in f]}
    if scores is not None and len(scores) >= 5:  # threshold-free check: is the score ranking informative?
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        top = order[:max(1, round(0.2 * len(order)))]
        rest = order[len(top):]
        out["top20"] = {"n": len(top), "miou_top20_uncertain": pooled(top), "miou_rest": pooled(rest)}
    return out


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def _baseline_label(report: dict[str, Any]) -> str:
    return method_title(str(report.get("baseline") or reference_baseline()))


def markdown_table(report: dict[str, Any]) -> str:
    names = report["classes"]
    head = "| method | mIoU | " + " | ".join(names) + f" | Δ vs {_baseline_label(report)} | train s | infer s/img |"
    lines = [f"Comparison on {report['n_test']} test frames ({report['n_train']} labelled train frames, "
             f"{report['image_size']} px, budget `{report['budget']}`; pool: {report['pool_size']} images from "
             f"{report['pool_source']}).", "", head, "|" + "---|" * (len(names) + 5)]
    for n, r in report["methods"].items():
        d = report["vs_unet"].get(n)
        lines.append(f"| {n} | {_fmt(r['miou'])} | " + " | ".join(_fmt(r['per_class_iou'].get(c)) for c in names)
                     + f" | {'' if d is None else f'{d:+.3f}'} | {r['train_seconds']:.0f} | {r['infer_seconds_per_image']:.3f} |")
    for method, r in report["methods"].items():
        rv = r.get("review")
        if not rv:
            continue
        lines += ["", f"{method} review flag (top-10 % variance score > {rv['threshold']}, K = {rv['samples']}): "
                  f"{rv['n_flagged']} of {rv['n_flagged'] + rv['n_unflagged']} test frames flagged; mIoU flagged "
                  f"{_fmt(rv['miou_flagged'])} vs unflagged {_fmt(rv['miou_unflagged'])}."]
        if rv.get("top20"):
            t = rv["top20"]
            lines += [f"The {t['n']} most uncertain test frames (top 20 % by score): mIoU "
                      f"{_fmt(t['miou_top20_uncertain'])} vs {_fmt(t['miou_rest'])} for the rest."]
    lines += stats_markdown(report)
    lines += ["", "IoU convention: ignore pixels masked, classes absent from truth and prediction skipped."]
    return "\n".join(lines) + "\n"


def side_by_side(images: list[torch.Tensor], truths: list[np.ndarray], cols: dict[str, list[np.ndarray]],
                 unc: dict[str, list[np.ndarray]], classes) -> np.ndarray:  # noqa: ANN001
    """Rows = frames; columns = image | truth | each method's mask | each sampling method's variance, titled."""
    from PIL import Image, ImageDraw

    from ..outputs.render import heatmap

    titles = ["image", "truth", *cols] + [f"{n} var" for n in unc]
    S = images[0].shape[-1] if images else 32
    cell, pad, top = max(S, 96), 4, 16
    W = len(titles) * (cell + pad) + pad
    H = top + max(1, len(images)) * (cell + pad) + pad
    canvas = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(canvas)
    for j, t in enumerate(titles):
        draw.text((pad + j * (cell + pad) + 2, 2), t, fill="black")
    vmax = max((float(u.max()) for maps in unc.values() for u in maps), default=1.0) or 1.0
    for i, img in enumerate(images):
        tiles = [((img.permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8),
                 classes.colorize(truths[i])] + [classes.colorize(cols[n][i]) for n in cols]
        tiles += [heatmap(maps[i], vmax) for maps in unc.values()]
        for j, tile in enumerate(tiles):
            im = Image.fromarray(tile).resize((cell, cell), Image.Resampling.NEAREST)
            canvas.paste(im, (pad + j * (cell + pad), top + pad + i * (cell + pad)))
    return np.asarray(canvas)


def k_sample_study(method, images: torch.Tensor, masks: torch.Tensor, names: list[str],  # noqa: ANN001
                   ks: Sequence[int] = (1, 5, 10), seeds: int = 3) -> tuple[dict[str, Any], np.ndarray]:
    """mIoU of a sampling method (`sample_variance`) with K samples over several sampling seeds: more
    samples → a steadier estimate.

    Returns {K: {"miou_per_seed", "mean", "std", "mean_variance"}} and a figure (one frame: mask and
    variance map per K, common colour scale)."""
    from PIL import Image, ImageDraw

    from ..outputs.render import heatmap

    study: dict[str, Any] = {}
    tiles: list[tuple[np.ndarray, np.ndarray]] = []
    for k in ks:
        mious, mvar = [], []
        for s in range(seeds):
            cm = ConfusionMatrix(len(names))
            for i, (img, mask) in enumerate(zip(images, masks)):
                out = method.predict(img, k=k, seed=1000 * s + i)
                cm.update(out.labels.numpy(), mask.numpy())
                mvar.append(float(out.uncertainty["variance"].mean()))
                if s == 0 and i == 0:
                    tiles.append((method.ctx.classes.colorize(out.labels.numpy().astype(np.uint8)),
                                  out.uncertainty["variance"].numpy()))
            mious.append(summarize(cm, names)["miou"])
        study[str(k)] = {"miou_per_seed": mious, "mean": float(np.mean(mious)), "std": float(np.std(mious)),
                         "mean_variance": float(np.mean(mvar))}
    vmax = max(float(v.max()) for _, v in tiles) or 1.0
    cell, pad, top = 128, 4, 30
    canvas = Image.new("RGB", (len(tiles) * (cell + pad) + pad, top + 2 * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for j, ((lab, var), k) in enumerate(zip(tiles, ks)):
        st = study[str(k)]
        draw.text((pad + j * (cell + pad), 2), f"K={k} mIoU {st['mean']:.3f}±{st['std']:.3f}", fill="black")
        draw.text((pad + j * (cell + pad), 15), f"({seeds} seeds)", fill="black")
        for r, tile in enumerate((lab, heatmap(var, vmax))):
            canvas.paste(Image.fromarray(tile).resize((cell, cell), Image.Resampling.NEAREST),
                         (pad + j * (cell + pad), top + r * (cell + pad)))
    return study, np.asarray(canvas)
