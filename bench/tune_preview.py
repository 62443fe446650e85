"""Tune's live preview: median time from "recipe chosen" to "scored result" (engine side of a click in Tune).

Three situations, each timed per recipe (single-cell and multi-block side by side), wall and CPU time:
- memory: the recipe's features are already in the feature bank (a recipe seen before in this session; the
  preview's pixel columns are kept too) — the head is refitted and every frame re-scored each repeat;
- cache: a fresh bank per repeat, features read from the on-disk feature cache (the issue's "with cached
  features": the first visit to a recipe in a new server process, or a block not yet in memory);
- cold (--cold): an empty feature cache, so each new timestep runs one UNet forward per train
  frame that yields every decoder block (timed once per recipe, in order, as a user would meet them).
The preview is closed-form shrinkage LDA, scored by 4-fold cross-validation on the 20 train frames (no test
frame is read). For contrast, --ensemble times the sweep-settings ensemble refit (explore.quick_fit) once per recipe.
Usage: python bench/tune_preview.py [--threads 1] [--repeats 5] [--cold] [--ensemble]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RECIPES = [((20,), (7,)), ((20, 50), (5, 6, 7)), ((50, 150), (4, 5)), ((20,), (6, 7, 8)),
           ((50, 150, 250), (5, 6, 7, 8, 10))]


def timed(fn, *args):  # noqa: ANN001, ANN002, ANN201
    """(result, wall s, CPU s of this process) of one call fn(*args)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - w, time.process_time() - c


def fmt(walls: list[float], cpus: list[float]) -> str:
    return f"wall {statistics.median(walls):.2f} s (max {max(walls):.2f}), CPU {statistics.median(cpus):.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-test", type=int, default=20)
    ap.add_argument("--cold", action="store_true", help="also time the first preview with an empty feature cache")
    ap.add_argument("--ensemble", action="store_true", help="also time the (slow) sweep-settings ensemble refit")
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
    print(f"load {os.getloadavg()[0]:.1f} (1-min average) on {os.cpu_count()} cores, {args.threads} torch thread(s)")
    if args.cold:
        with tempfile.TemporaryDirectory() as tmp:
            bank = explore.FeatureBank(run, ds, default_cache(run, tmp), args.max_test)
            for steps, blocks in RECIPES:
                (_, res), w, c = timed(explore.preview_fit, bank, steps, blocks)
                print(f"cold  t={list(steps)} blocks={list(blocks)}: wall {w:.2f} s, CPU {c:.2f} s "
                      f"(mIoU {res['miou']:.3f})", flush=True)
    warm = explore.FeatureBank(run, ds, cache, args.max_test)
    for steps, blocks in RECIPES:  # fill the disk cache (a no-op when it is warm already)
        explore.preview_fit(warm, steps, blocks)
    for steps, blocks in RECIPES:
        mem_w, mem_c, disk_w, disk_c = [], [], [], []
        for _ in range(args.repeats):
            (_, res), w, c = timed(explore.preview_fit, warm, steps, blocks)
            mem_w.append(w), mem_c.append(c)
            fresh = explore.FeatureBank(run, ds, cache, args.max_test)
            _, w, c = timed(explore.preview_fit, fresh, steps, blocks)
            disk_w.append(w), disk_c.append(c)
        dim = sum(run.model.output_channels[b] for b in blocks) * len(steps)
        line = (f"t={list(steps)} blocks={list(blocks)} (D={dim}): memory {fmt(mem_w, mem_c)}; "
                f"cache {fmt(disk_w, disk_c)}; CV mIoU {res['miou']:.3f}")
        if args.ensemble:
            (_, full), w, _c = timed(explore.quick_fit, run, ds, steps, blocks, cache, args.max_test)
            line += f"; ensemble refit (sweep settings) {w:.1f} s, mIoU {full['miou']:.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
