"""Colour casts of a run's samples: Fréchet distance between per-image colour mean/std of N samples and N
real frames (engine/scoring/colour_stats.py). Prints JSON.

    python bench/colour_casts.py --run assets/demo_run --data work/synth --n 64 --sampler ddim --steps 25
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.scoring.colour_stats import colour_report
from engine.data.folder import open_dataset
from engine.data.transforms import fit_square
from engine.models.run import load_run
from engine.diffusion.sampling import sample_images


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True, help="folder data set; real frames from its unlabeled split, else train")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    run = load_run(a.run, "cpu")
    ds = open_dataset(a.data)
    stems = (ds.stems("unlabeled") or ds.stems("train"))[: a.n]
    real = np.stack([(np.clip(fit_square(ds.image(s), run.image_size), 0, 1) * 255).round().astype(np.uint8)
                     for s in stems])
    t0 = time.time()
    samples = sample_images(run, a.n, a.sampler, a.steps, a.seed)
    rep = colour_report(samples, real)
    rep.update({"sampler": a.sampler, "steps": a.steps, "seed": a.seed, "sample_seconds": round(time.time() - t0, 1),
                "run": a.run})
    print(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
