"""Active learning on the synthetic set with an oracle: does choosing the frames pay?

Pool and test frames come from the synthetic generator, which knows every true mask (the oracle reveals a
frame's mask when it is "labelled"). Start from 2 random pool frames, add 2 per round up to --max-labels
with three strategies, fit the pixel-classifier ensemble on the labelled frames each round, and score it on
the test frames (which are never candidates and never steer a choice):
  random                 2 pool frames drawn at random
  uncertainty            the 2 frames with the highest image uncertainty (top-10 % JS among members)
  uncertainty+diversity  k-center greedy weighted by uncertainty rank (engine/labelling/selection.py)
Features are the demo classifier's (t = 20, 50 × blocks 5, 6, 7 of assets/demo_run), extracted once.

  nice -n 10 python bench/active_learning.py --seeds 0,1,2 --json assets/active_learning.json
prints mean ± sd of test mIoU per strategy and label count, and writes the JSON and a PNG figure.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.atomic import write_json_atomic
from engine.segmentation.classifier_training import FitConfig, fit_ensemble
from engine.data.classes import STUDY5
from engine.data.synthetic import frame_seeds, generate_frame
from engine.data.transforms import to_tensor
from engine.segmentation.features import FeatureExtractor, FeatureSpec, default_cache
from engine.scoring.metrics import ConfusionMatrix, summarize
from engine.segmentation.pixel_classifier import summarise
from engine.models.run import load_run
from engine.labelling.selection import k_center_greedy, standardise, top_uncertain
from engine.labelling.suggest import pooled

STRATEGIES = ("random", "uncertainty", "uncertainty+diversity")


def make_frames(seed: int, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n synthetic frames (model-ready tensors) and their oracle masks."""
    frames = [generate_frame(s, size) for s in frame_seeds(seed, n)]
    images = torch.stack([to_tensor(rgb.astype(np.float32) / 255.0) for rgb, _ in frames])
    masks = torch.stack([torch.from_numpy(m.astype(np.int64)) for _, m in frames])
    return images, masks


def predict(model, maps: list[torch.Tensor], idx: list[int], hw: tuple[int, int]):
    """Summaries (labels, JS score) of the frames `idx`."""
    return [summarise(model.predict_logits([m[i].float() for m in maps], hw)) for i in idx]


def miou(model, maps, masks: torch.Tensor) -> float:
    cm = ConfusionMatrix(STUDY5.num_classes)
    for pred, truth in zip(predict(model, maps, list(range(len(masks))), tuple(masks.shape[-2:])), masks):
        cm.update(pred.labels.numpy(), truth.numpy())
    return float(summarize(cm, STUDY5.names)["miou"])


def run_strategy(strategy: str, seed: int, pool_maps, pool_masks, pool_z, test_maps, test_masks,
                 start: int, step: int, max_labels: int, cfg: FitConfig) -> list[float]:
    """Test mIoU after each round of one strategy and seed."""
    rng = np.random.default_rng(seed)
    n_pool = len(pool_masks)
    labelled = [int(i) for i in rng.choice(n_pool, start, replace=False)]  # same start for every strategy
    pick_rng = np.random.default_rng(seed + 1000)
    curve = []
    while True:
        sub = [m[labelled] for m in pool_maps]
        model, _ = fit_ensemble(sub, pool_masks[labelled], STUDY5.num_classes, FitConfig(**{**cfg.to_dict(), "seed": seed}))
        curve.append(miou(model, test_maps, test_masks))
        if len(labelled) >= max_labels:
            return curve
        rest = [i for i in range(n_pool) if i not in labelled]
        k = min(step, max_labels - len(labelled))
        if strategy == "random":
            new = [int(i) for i in pick_rng.choice(rest, k, replace=False)]
        else:
            scores = np.array([p.js_score for p in predict(model, pool_maps, rest, tuple(pool_masks.shape[-2:]))])
            if strategy == "uncertainty":
                new = [rest[i] for i in top_uncertain(scores, k)]
            else:
                picks = k_center_greedy(pool_z[rest], pool_z[labelled], k, scores)
                new = [rest[p.index] for p in picks]
        labelled += new


def figure_png(result: dict, path: Path) -> None:
    """Mean ± sd curves as a PNG (Pillow only: no plotting library is a dependency)."""
    from PIL import Image, ImageDraw

    from engine.data.images import save_png_atomic

    W, H, L, R, T, B = 760, 460, 70, 200, 40, 60
    im = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(im)
    xs = result["labels"]
    allv = [v for s in result["strategies"].values() for m, sd in zip(s["mean"], s["sd"]) for v in (m - sd, m + sd)]
    y0, y1 = np.floor(min(allv) * 20) / 20, np.ceil(max(allv) * 20) / 20
    px = lambda x: L + (x - xs[0]) / (xs[-1] - xs[0]) * (W - L - R)
    py = lambda y: T + (y1 - y) / (y1 - y0) * (H - T - B)
    for yv in np.arange(y0, y1 + 1e-9, 0.05):
        d.line([(L, py(yv)), (W - R, py(yv))], fill=(230, 230, 230))
        d.text((L - 40, py(yv) - 6), f"{yv:.2f}", fill="black")
    for xv in xs:
        d.text((px(xv) - 6, H - B + 6), str(xv), fill="black")
    d.rectangle([L, T, W - R, H - B], outline="black")
    d.text((L + (W - L - R) // 2 - 60, H - B + 26), "labelled frames", fill="black")
    d.text((8, T - 30), f"test mIoU (mean ± sd over {len(result['seeds'])} seeds)", fill="black")
    colours = {"random": (120, 120, 120), "uncertainty": (31, 119, 180), "uncertainty+diversity": (214, 39, 40)}
    for k, (name, s) in enumerate(result["strategies"].items()):
        c = colours[name]
        band = [(px(x), py(m + sd)) for x, m, sd in zip(xs, s["mean"], s["sd"])] + \
               [(px(x), py(m - sd)) for x, m, sd in reversed(list(zip(xs, s["mean"], s["sd"])))]
        overlay = Image.new("RGBA", im.size, (0, 0, 0, 0))
        ImageDraw.Draw(overlay).polygon(band, fill=(*c, 45))
        im.paste(overlay, (0, 0), overlay)
        d = ImageDraw.Draw(im)
        d.line([(px(x), py(m)) for x, m in zip(xs, s["mean"])], fill=c, width=3)
        d.line([(W - R + 12, T + 20 + 22 * k), (W - R + 36, T + 20 + 22 * k)], fill=c, width=3)
        d.text((W - R + 42, T + 14 + 22 * k), name, fill="black")
    target = result["strategies"]["random"]["mean"][-1]
    d.line([(L, py(target)), (W - R, py(target))], fill=(120, 120, 120), width=1)
    d.text((L + 6, py(target) - 14), f"random with {xs[-1]} labels: {target:.3f}", fill=(90, 90, 90))
    save_png_atomic(path, np.asarray(im))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="assets/demo_run")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--pool", type=int, default=60)
    ap.add_argument("--test", type=int, default=40)
    ap.add_argument("--start", type=int, default=2)
    ap.add_argument("--step", type=int, default=2)
    ap.add_argument("--max-labels", type=int, default=20)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--data-seed", type=int, default=7, help="seed of the synthetic pool/test frames")
    ap.add_argument("--json", default="assets/active_learning.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--combos", help="only these seed:strategy runs (e.g. 2:random,2:uncertainty), curves to --json; "
                                     "lets the runs go to several processes")
    ap.add_argument("--assemble", help="comma-separated partial JSONs (from --combos) or logs of this script to "
                                       "combine into the final --json and figure")
    args = ap.parse_args()
    if args.assemble:
        return assemble(args)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    run = load_run(args.run, "cpu")
    size = run.image_size
    spec = FeatureSpec((20, 50), (5, 6, 7))
    ext = FeatureExtractor(run, spec, default_cache(run))
    images, masks = make_frames(args.data_seed, args.pool + args.test, size)
    maps = ext.many(images)
    pool_maps, test_maps = [m[: args.pool] for m in maps], [m[args.pool:] for m in maps]
    pool_masks, test_masks = masks[: args.pool], masks[args.pool:]
    pool_z = standardise(np.stack([pooled([m[i] for m in pool_maps]) for i in range(args.pool)]))
    print(f"features of {len(images)} frames: {time.time() - t0:.1f} s", flush=True)
    cfg = FitConfig(members=args.members, max_epochs=args.epochs, max_pixels=60_000)
    seeds = [int(s) for s in args.seeds.split(",")]
    labels = list(range(args.start, args.max_labels + 1, args.step))
    combos = [(seed, strat) for seed in seeds for strat in STRATEGIES]
    if args.combos:
        combos = [(int(c.split(":")[0]), c.split(":", 1)[1]) for c in args.combos.split(",")]
    runs: list[dict] = []
    for seed, strat in combos:
        t1 = time.time()
        c = run_strategy(strat, seed, pool_maps, pool_masks, pool_z, test_maps, test_masks, args.start,
                         args.step, args.max_labels, cfg)
        runs.append({"seed": seed, "strategy": strat, "curve": c})
        print(f"seed {seed} {strat:22s} " + " ".join(f"{v:.3f}" for v in c) + f"  ({time.time() - t1:.0f} s)",
              flush=True)
        if args.combos:
            write_json_atomic(args.json, {"labels": labels, "runs": runs})
    if args.combos:
        return 0
    result = summarise_runs(runs, labels, args, spec.to_dict(), cfg.to_dict(), size)
    result["seconds"] = round(time.time() - t0, 1)
    return finish(result, args)


def summarise_runs(runs: list[dict], labels: list[int], args, spec: dict, cfg: dict, size: int) -> dict:
    """mean ± sd per strategy and label count over seeds, and the labels each strategy needs to match random."""
    seeds = sorted({r["seed"] for r in runs})
    curves = {s: [r["curve"] for r in sorted(runs, key=lambda r: r["seed"]) if r["strategy"] == s] for s in STRATEGIES}
    result = {"labels": labels, "seeds": seeds, "pool": args.pool, "test": args.test, "image_size": size,
              "spec": spec, "fit": cfg, "run": args.run,
              "strategies": {s: {"curves": v, "mean": np.mean(v, 0).tolist(), "sd": np.std(v, 0, ddof=1).tolist()
                                 if len(v) > 1 else [0.0] * len(labels)} for s, v in curves.items()}}
    target = result["strategies"]["random"]["mean"][-1]
    reach = {s: next((n for n, m in zip(labels, r["mean"]) if m >= target), None)
             for s, r in result["strategies"].items()}
    result["target_random_at_max"] = target
    result["labels_to_reach_target"] = reach
    return result


def finish(result: dict, args) -> int:
    """Print the table, write the JSON and the figure."""
    labels, target, reach = result["labels"], result["target_random_at_max"], result["labels_to_reach_target"]
    print("labels | " + " | ".join(STRATEGIES))
    for i, n in enumerate(labels):
        print(f"{n:6d} | " + " | ".join(f"{result['strategies'][s]['mean'][i]:.3f} ± {result['strategies'][s]['sd'][i]:.3f}"
                                        for s in STRATEGIES))
    print(f"random @ {labels[-1]} labels: {target:.3f}; labels needed to reach it: {json.dumps(reach)}")
    write_json_atomic(args.json, result)
    figure_png(result, Path(args.json).with_suffix(".png"))
    print(f"wrote {args.json} and {Path(args.json).with_suffix('.png')}")
    return 0


def assemble(args) -> int:
    """Combine partial JSONs (--combos) and logs of earlier runs (lines 'seed S STRATEGY v v v …')."""
    runs: dict[tuple[int, str], list[float]] = {}
    for src in args.assemble.split(","):
        text = Path(src).read_text()
        if src.endswith(".json"):
            for r in json.loads(text)["runs"]:
                runs[(r["seed"], r["strategy"])] = r["curve"]
        else:
            for line in text.splitlines():
                parts = line.split()
                if len(parts) > 3 and parts[0] == "seed" and parts[2] in STRATEGIES:
                    runs[(int(parts[1]), parts[2])] = [float(v) for v in parts[3:] if not v.startswith("(")
                                                       and not v.endswith(")")]
    labels = list(range(args.start, args.max_labels + 1, args.step))
    bad = [k for k, c in runs.items() if len(c) != len(labels)]
    if bad:
        raise SystemExit(f"runs {bad} do not have {len(labels)} rounds")
    cfg = FitConfig(members=args.members, max_epochs=args.epochs, max_pixels=60_000).to_dict()
    result = summarise_runs([{"seed": s, "strategy": st_, "curve": c} for (s, st_), c in sorted(runs.items())],
                            labels, args, FeatureSpec((20, 50), (5, 6, 7)).to_dict(), cfg, 64)
    result["sources"] = args.assemble.split(",")
    return finish(result, args)


if __name__ == "__main__":
    sys.exit(main())
