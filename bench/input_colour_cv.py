"""Does the frame's own colour help the pixel head? 4-fold CV on the labelled TRAIN frames only (no test frame
is read): the recipe's diffusion maps alone vs + the frame's RGB as more maps: per pixel at the model's input
size or at the label size, in a k×k window at the model size (`fit --rgb-window k`), or from the frame at twice
the model size, each 2×2 block of it stacked as 12 channels per model pixel (space-to-depth) in a 3×3 window.
Prints one JSON line per variant.

    python bench/input_colour_cv.py --run assets/demo_run --data assets/demo_data [--cache-dir DIR] [--threads 1]
        [--label-size 64] [--variants maps,rgb,rgb-label,window3,window5,grey-window3,s2d-window3]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data.folder import load_labelled, open_dataset  # noqa: E402
from engine.models.run import load_run  # noqa: E402
from engine.scoring.cv import cv_score  # noqa: E402
from engine.segmentation.classifier_training import FitConfig  # noqa: E402
from engine.segmentation.features import FeatureExtractor, FeatureSpec, default_cache, rgb_window_map  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", default="20")
    ap.add_argument("--blocks", default="5,6,7")
    ap.add_argument("--n-noise", type=int, default=3)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--label-size", type=int, default=None, help="default: the data set's mask size (128 for the demo)")
    ap.add_argument("--cache-dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--maps-only", action="store_true",
                    help="only the diffusion maps (e.g. to compare two runs' features at one recipe)")
    ap.add_argument("--variants", default="maps,rgb,rgb-label",
                    help="comma list of maps, rgb, rgb-label, window3, window5, grey-window3, s2d-window3")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    run = load_run(a.run, "cpu")
    ds = open_dataset(a.data)
    spec = FeatureSpec(tuple(int(v) for v in a.steps.split(",")), tuple(int(v) for v in a.blocks.split(",")), 0,
                       a.n_noise)
    ext = FeatureExtractor(run, spec, default_cache(run, a.cache_dir))
    first = next(s for s in ds.stems("train") if ds.has_mask(s))
    label = a.label_size or min(ds.mask(first).shape[:2])
    images, masks, _ = load_labelled(ds, "train", run.image_size, label)
    big, _, _ = load_labelled(ds, "train", label, label)
    maps = list(ext.many(images))
    cfg = FitConfig(members=a.members, max_epochs=a.epochs)
    size = run.image_size

    def twice() -> torch.Tensor:  # the frames at 2× the model size, 2×2 blocks stacked: 12 channels per model pixel
        hi, _, _ = load_labelled(ds, "train", 2 * size, label)
        return F.pixel_unshuffle(hi.float(), 2)

    table = {"maps": ("diffusion maps", lambda: []), "rgb": (f"+ RGB at {size}", lambda: [images.float()]),
             "rgb-label": (f"+ RGB at {label}", lambda: [big.float()]),
             "window3": (f"+ RGB 3×3 window at {size}", lambda: [rgb_window_map(images, 3)]),
             "window5": (f"+ RGB 5×5 window at {size}", lambda: [rgb_window_map(images, 5)]),
             "grey-window3": (f"+ grey-level 3×3 window at {size} (colour-invariant detail)",
                              lambda: [rgb_window_map(images.float().mean(1, keepdim=True).expand(-1, 3, -1, -1),
                                                      3)[:, :9]]),  # the 3 channels are equal: keep one
             "s2d-window3": (f"+ frame at {2 * size}, space-to-depth, 3×3 window",
                             lambda: [F.unfold(F.pad(twice(), (1,) * 4, mode="replicate"), 3).view(
                                 len(images), 108, size, size)])}
    chosen = ["maps"] if a.maps_only else [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in table]
    if unknown:
        ap.error(f"--variants: unknown {unknown}; choose from {list(table)}")
    for name, make in (table[v] for v in chosen):
        extra = make()
        t0 = time.time()
        r = cv_score(maps + extra, masks, ds.classes.names, cfg)
        print(json.dumps({"variant": name, "cv_miou": round(r["miou"], 4),
                          "per_class_iou": {k: round(v, 4) for k, v in r["per_class_iou"].items()},
                          "fold_miou": [round(v, 4) for v in r["cv"]["fold_miou"]], "seconds": round(time.time() - t0)}),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
