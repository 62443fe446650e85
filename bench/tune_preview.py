"""Tune's live preview: median time from "recipe chosen" to "scored result" with the features in memory.

Warm-up: the feature bank of the demo data (20 train + --max-test test frames) loads each (t, block) once
(from the feature cache, or computed). Then each recipe is timed --repeats times: fit the logistic-regression
preview head + predict and score every test frame (what a click in Tune runs), and for contrast the
sweep-settings ensemble refit (explore.quick_fit) once per recipe.
Usage: python bench/tune_preview.py [--threads 2] [--repeats 5] [--max-test 20] [--no-ensemble]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RECIPES = [((20,), (7,)), ((20, 50), (5, 6, 7)), ((50, 150), (4, 5)), ((20,), (6, 7, 8))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-test", type=int, default=20)
    ap.add_argument("--no-ensemble", action="store_true", help="skip the (slow) ensemble refit timings")
    ap.add_argument("--cache", default=None, help="feature cache dir (default: the run's default cache)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from engine.app import explore
    from engine.data.folder import FolderDataset
    from engine.segmentation.features import default_cache
    from engine.models.run import load_run

    run = load_run(REPO / "assets" / "demo_run", "cpu")
    ds = FolderDataset(REPO / "assets" / "demo_data")
    cache = default_cache(run, args.cache)
    t0 = time.perf_counter()
    bank = explore.FeatureBank(run, ds, cache, args.max_test)
    for steps, blocks in RECIPES:
        bank.maps("train", steps, blocks), bank.maps("test", steps, blocks)
    print(f"feature bank warm-up ({len(bank.stems['train'])} train + {len(bank.stems['test'])} test frames): "
          f"{time.perf_counter() - t0:.1f} s")
    for steps, blocks in RECIPES:
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            _, res = explore.preview_fit(bank, steps, blocks)
            times.append(time.perf_counter() - t)
        line = (f"t={list(steps)} blocks={list(blocks)}: preview median {statistics.median(times) * 1000:.0f} ms "
                f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}), mIoU {res['miou']:.3f}")
        if not args.no_ensemble:
            t = time.perf_counter()
            _, full = explore.quick_fit(run, ds, steps, blocks, cache, args.max_test)
            line += f"; ensemble refit (sweep settings) {time.perf_counter() - t:.1f} s, mIoU {full['miou']:.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
