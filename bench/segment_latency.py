"""One frame end to end with the demo preset (model load excluded): features without cache + factorised
prediction, median of --repeats; then the naive path (upsample + concatenate + Linear) at the same dims.

Uses assets/demo_run (and assets/demo_classifier when present) if they exist; otherwise a random-init UNet
of the demo preset and a random-init ensemble of the same shape (timings do not depend on the weights).
Usage: python bench/segment_latency.py [--threads 2] [--repeats 5]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--members", type=int, default=10)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from engine.segmentation.classifier import load_classifier
    from engine.diffusion import GaussianDiffusion
    from engine.segmentation.features import FeatureExtractor, default_spec
    from engine.models.config import get_preset
    from engine.models.unet import UNetModel
    from engine.segmentation.pixel_classifier import EnsembleMLP, hidden_sizes, naive_pixel_features, summarise
    from engine.models.run import Run, load_run

    run_dir, clf_dir = REPO / "assets" / "demo_run", REPO / "assets" / "demo_classifier"
    model = spec = None
    if (clf_dir / "config.json").is_file():
        clf = load_classifier(clf_dir, "cpu", use_cache=False)
        run, spec, model, source = clf.run, clf.spec, clf.model, f"{clf_dir.relative_to(REPO)}"
    elif (run_dir / "config.json").is_file():
        run, source = load_run(run_dir, "cpu"), str(run_dir.relative_to(REPO))
    else:
        p = get_preset("demo")
        torch.manual_seed(0)
        run = Run(Path("demo-random"), UNetModel(p.unet).eval(), GaussianDiffusion.from_config(
            p.diffusion.schedule, p.diffusion.num_timesteps, p.diffusion.learn_sigma), p.unet, p.diffusion, {}, "random")
        source = "random-init demo preset"
    if spec is None:
        spec = default_spec(run)
    ext = FeatureExtractor(run, spec, cache=None)
    if model is None:
        model = EnsembleMLP(sum(ext.channels), 5, hidden_sizes("ddpm", 5), args.members).eval()
    S = run.image_size
    hw = (S, S)
    image = torch.rand(3, S, S, generator=torch.Generator().manual_seed(0)) * 2 - 1
    print(f"{source}: image {S}x{S}, steps {spec.steps}, blocks {spec.blocks}, D={model.in_dim}, "
          f"{model.members} members, {args.threads} threads")

    def factorised() -> tuple[float, float]:
        t0 = time.perf_counter()
        maps = ext(image)
        t1 = time.perf_counter()
        summarise(model.predict_logits(maps, hw))
        return t1 - t0, time.perf_counter() - t1

    def naive(maps) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            x = naive_pixel_features(maps, hw).reshape(model.in_dim, -1).T.contiguous()
            logits = model(x).transpose(1, 2).reshape(model.members, model.num_classes, *hw)
        summarise(logits)
        return time.perf_counter() - t0

    maps = ext(image)
    factorised(), naive(maps)  # warm-up
    fact, nai = [], []
    for _ in range(args.repeats):  # interleaved, so a busy shared machine slows both alike
        fact.append(factorised())
        nai.append(naive(maps))
    feat = statistics.median(f for f, _ in fact)
    pred = statistics.median(p for _, p in fact)
    total = statistics.median(f + p for f, p in fact)
    nai_m = statistics.median(nai)
    print(f"end to end (features, no cache + factorised prediction): median {total * 1000:.0f} ms "
          f"(features {feat * 1000:.0f} ms, prediction {pred * 1000:.0f} ms) over {args.repeats} runs")
    print(f"naive prediction (upsample + concat + Linear) at the same dims: median {nai_m * 1000:.0f} ms; "
          f"end to end naive {(feat + nai_m) * 1000:.0f} ms")
    print(f"speed-up of the prediction step: {nai_m / pred:.1f}x; end to end: {(feat + nai_m) / total:.1f}x")


if __name__ == "__main__":
    main()
