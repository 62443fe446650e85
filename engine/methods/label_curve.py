"""The label-count curve: test mIoU against the number of labelled train frames, per method.

For each count n, `draws` seeded subsets of n train frames are drawn (one subset when n is every train
frame), each method is fitted on each subset with each training seed (cached like `compare`), and
scored on the same test frames. Reported per (method, n): every run's mIoU, mean ± sd over seeds × draws,
and each run's 95 % bootstrap interval. Counts above the number of train frames are skipped (noted).
The figure is drawn with Pillow (no plotting library is a dependency): mean ± sd error bars per method.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_json_atomic, write_text_atomic
from ..scoring.bootstrap import bootstrap_miou
from ..errors import ConfigError
from .base import check_budget, tensor_digest
from .compare import ComparisonSetup, fit_or_load, seed_overrides
from ..outputs.palette import method_colour
from ..scoring.metrics import ConfusionMatrix, summarize

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def label_subsets(n_train: int, count: int, draws: int, seed: int = 0) -> list[list[int]]:
    """`draws` distinct-as-possible sorted subsets of `count` train-frame indices (one if count == n_train)."""
    if not 1 <= count <= n_train:
        raise ConfigError(f"--label-counts: count {count} outside 1..{n_train} (the labelled train frames)")
    if count == n_train:
        return [list(range(n_train))]
    rng = np.random.default_rng([seed, count])
    return [sorted(rng.choice(n_train, size=count, replace=False).tolist()) for _ in range(draws)]


def label_curve(data: str | Path, run_path: str | Path | None, methods: Sequence[str], counts: Sequence[int],
                json_out: str | Path, seeds: Sequence[int] = (0, 1, 2), draws: int = 2, budget: str = "quick",
                work: str | Path | None = None, pool_dir: str | Path | None = None, device: str | torch.device = "cpu",
                overrides: dict[str, dict[str, Any]] | None = None, max_pool: int | None = None,
                max_test: int | None = None, draw_seed: int = 0, progress: Progress | None = None,
                feature_cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Fit every method on every (count, draw, seed), score on the test split; write JSON, Markdown, PNG."""
    check_budget(budget)
    say = progress or (lambda msg: log.info("%s", msg))
    json_out = Path(json_out)
    work = Path(work) if work else json_out.parent / "compare_work"
    setup = ComparisonSetup.load(data, run_path, methods, device, pool_dir, max_pool, max_test, feature_cache_dir)
    ds, size, ctx, pool, pool_src, run_hash = setup.ds, setup.size, setup.ctx, setup.pool, setup.pool_src, setup.run_hash
    tr_img, tr_mask, tr_stems = setup.train
    te_img, te_mask, te_stems = setup.test
    skipped = [c for c in counts if c > len(tr_stems)]
    counts = [c for c in counts if c <= len(tr_stems)]
    curves: dict[str, dict[str, Any]] = {}
    t_start = time.time()
    for name in methods:
        curves[name] = {}
        for n in counts:
            runs = []
            for d, subset in enumerate(label_subsets(len(tr_stems), n, draws, draw_seed)):
                idx = torch.as_tensor(subset)
                digest = tensor_digest(tr_img[idx], tr_mask[idx], pool)
                for seed in seeds:
                    ov = seed_overrides(name, budget, (overrides or {}).get(name, {}), seed)
                    m, cached, _ = fit_or_load(name, ctx, budget, ov, tr_img[idx], tr_mask[idx], pool, digest,
                                               run_hash, work, say)
                    cms = []
                    for img, mask in zip(te_img, te_mask):
                        cms.append(ConfusionMatrix(ds.classes.num_classes).update(m.predict(img).labels.numpy(),
                                                                                    mask.numpy()).matrix)
                    total = ConfusionMatrix(ds.classes.num_classes)
                    total.matrix = np.sum(cms, axis=0)
                    miou = summarize(total, ds.classes.names)["miou"]
                    ci = bootstrap_miou(np.stack(cms), n_boot=1000)
                    runs.append({"draw": d, "seed": int(seed), "frames": [tr_stems[i] for i in subset],
                                 "miou": miou, "ci95": [ci["lo"], ci["hi"]], "cached": cached,
                                 "train_seconds": float(m.stats.get("train_seconds", 0.0))})
                    say(f"{name} n={n} draw {d} seed {seed}: mIoU {miou:.3f}")
            vals = [r["miou"] for r in runs]
            curves[name][str(n)] = {"runs": runs, "mean": float(np.mean(vals)),
                                    "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, "n_runs": len(vals)}
    report = {"kind": "label_curve", "budget": budget, "data": str(data), "run": str(run_path) if run_path else None,
              "image_size": size, "counts": list(counts), "skipped_counts": skipped, "seeds": list(seeds),
              "draws": draws, "draw_seed": draw_seed, "n_train_available": len(tr_stems), "n_test": len(te_stems),
              "pool_size": len(pool), "pool_source": pool_src, "methods": list(methods), "curves": curves,
              "overrides": overrides or {}, "seconds": time.time() - t_start}
    write_curve(report, json_out)
    return report


def write_curve(report: dict[str, Any], json_out: str | Path) -> None:
    """The curve as JSON, its Markdown table and its figure (OUT.json, OUT.md, OUT.png), each atomically."""
    from ..data.images import save_png_atomic

    json_out = Path(json_out)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(json_out, report)
    write_text_atomic(json_out.with_suffix(".md"), curve_markdown(report))
    save_png_atomic(json_out.with_suffix(".png"), curve_figure(report))


#: what two curve reports must share to be drawn as one figure (same frames, model and training budget)
SAME_SETUP = ("data", "run", "image_size", "budget", "n_test", "pool_source", "draw_seed")


def merge_curves(base: dict[str, Any], added: dict[str, Any], where: str = "--add-to") -> dict[str, Any]:
    """`base` with `added`'s methods joined (e.g. an expensive method run later with fewer counts, seeds or
    draws); each joined method's own seeds/draws/counts are recorded and said under the table."""
    differ = [k for k in SAME_SETUP if base.get(k) != added.get(k)]
    if differ:
        raise ConfigError(f"{where}: the curves were made on a different setup ({', '.join(differ)}); "
                          "use the same --data, --run, --budget, --pool and test frames")
    out = {**base, "curves": {**base["curves"], **added["curves"]},
           "counts": sorted({*base["counts"], *added["counts"]}),
           "methods": [m for m in base["methods"] if m not in added["methods"]] + list(added["methods"]),
           "overrides": {**base.get("overrides", {}), **added.get("overrides", {})},
           "runs_per_method": dict(base.get("runs_per_method", {}))}
    for name in added["methods"]:
        out["runs_per_method"][name] = {"counts": added["counts"], "seeds": added["seeds"], "draws": added["draws"],
                                        "seconds": added.get("seconds")}
    return out


def curve_markdown(report: dict[str, Any]) -> str:
    """Table: rows = methods, columns = label counts, cells = mean ± sd (runs)."""
    counts = report["counts"]
    lines = [f"Test mIoU vs labelled train frames ({report['n_test']} test frames, {report['image_size']} px, budget "
             f"`{report['budget']}`; mean ± sd over seeds {report['seeds']} × up to {report['draws']} label draws).", "",
             "| method | " + " | ".join(f"n = {c}" for c in counts) + " |", "|---|" + "---|" * len(counts)]
    for name, curve in report["curves"].items():
        cells = [f"{curve[str(c)]['mean']:.3f} ± {curve[str(c)]['sd']:.3f} ({curve[str(c)]['n_runs']})"
                 if str(c) in curve else "–" for c in counts]  # a method run at fewer counts (e.g. conddiff)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, own in report.get("runs_per_method", {}).items():  # a method joined later with other settings
        lines += ["", f"{name}: counts {own['counts']}, seeds {own['seeds']} × {own['draws']} label draw(s)"
                  + (f", {own['seconds'] / 60:.0f} min" if own.get("seconds") else "") + " (joined with --add-to)."]
    if report.get("skipped_counts"):
        lines += ["", f"Skipped counts (more than the {report['n_train_available']} train frames): "
                  f"{report['skipped_counts']}."]
    return "\n".join(lines) + "\n"


def curve_figure(report: dict[str, Any], width: int = 720, height: int = 440) -> np.ndarray:
    """RGB figure: mIoU (mean ± sd) against label count on a log x axis, one coloured line per method."""
    from PIL import Image, ImageDraw

    counts = report["counts"]
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 60, width - 150, 36, height - 50
    means = [c["mean"] for cur in report["curves"].values() for c in cur.values()]
    sds = [c["sd"] for cur in report["curves"].values() for c in cur.values()]
    lo = max(0.0, np.floor((min(means) - max(sds, default=0) - 0.02) * 10) / 10) if means else 0.0
    hi = min(1.0, np.ceil((max(means) + max(sds, default=0) + 0.02) * 10) / 10) if means else 1.0
    lx = [np.log(c) for c in counts]
    x0, x1 = (min(lx), max(lx)) if len(lx) > 1 else (lx[0] - 1, lx[0] + 1)

    def px(c: int) -> float:  # 20 px inset so end points clear the frame
        return left + 20 + (np.log(c) - x0) / max(x1 - x0, 1e-9) * (right - left - 40)

    def py(v: float) -> float:
        return bottom - (v - lo) / max(hi - lo, 1e-9) * (bottom - top)

    d.rectangle([left, top, right, bottom], outline=(120, 120, 120))
    for k in range(int(round((hi - lo) / 0.1)) + 1):
        v = lo + 0.1 * k
        d.line([left, py(v), right, py(v)], fill=(230, 230, 230))
        d.text((left - 34, py(v) - 6), f"{v:.1f}", fill="black")
    for c in counts:
        d.line([px(c), bottom, px(c), bottom + 4], fill="black")
        d.text((px(c) - 4, bottom + 8), str(c), fill="black")
    d.text((left + (right - left) // 2 - 70, height - 22), "labelled train frames (log scale)", fill="black")
    d.text((8, 8), f"Label-count curve: test mIoU, mean +/- sd over seeds and label draws ({report['n_test']} test "
                   f"frames, budget {report['budget']})", fill="black")
    for i, (name, cur) in enumerate(report["curves"].items()):
        col = method_colour(name, i)
        own = [c for c in counts if str(c) in cur]  # a method may have been run at fewer counts
        pts = [(px(c), py(cur[str(c)]["mean"])) for c in own]
        if len(pts) > 1:
            d.line(pts, fill=col, width=2)
        for c, (x, y) in zip(own, pts):
            s = cur[str(c)]["sd"]
            y0, y1 = py(cur[str(c)]["mean"] - s), py(cur[str(c)]["mean"] + s)
            d.line([x, y0, x, y1], fill=col, width=1)
            d.line([x - 4, y0, x + 4, y0], fill=col, width=1)  # caps
            d.line([x - 4, y1, x + 4, y1], fill=col, width=1)
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=col)
        d.line([right + 14, top + 10 + 18 * i, right + 34, top + 10 + 18 * i], fill=col, width=3)
        d.text((right + 40, top + 4 + 18 * i), name, fill="black")
    return np.asarray(img)
