"""Peak memory and time of the pixel-classifier ensemble at the paper's dims, factorised vs naive.

Feature maps are random fp16 tensors of the paper's decoder-block shapes (guided-diffusion 256² model,
ddpm-segmentation's steps 50,150,250 × blocks 5,6,7,8,12): per t 1024@32² + 512@32² + 512@32² + 512@64² +
256@128² → 2816 channels, ×3 t → D = 8448. Each variant runs in its own subprocess so peaks are separate
(ru_maxrss of that process).

  fit-factorised   fit_ensemble on native maps of N images (default 20), pixels gathered bilinearly
  fit-naive        the reference path: upsample + concatenate to (N, D, H, W) fp32, reshape to pixel rows,
                   train on rows. Run on --naive-images (default 1) and extrapolated linearly to N.
  predict-*        one whole 256² image, 10 members: predict_logits (factorised) vs upsample+concat+Linear.

Training is capped (--max-pixels, --epochs) because the memory, not the optimiser, is what is measured;
the same cap is used for both paths so their times are comparable.
Usage: python bench/classifier_memory.py [--images 20] [--naive-images 1] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCKS = [(1024, 32), (512, 32), (512, 32), (512, 64), (256, 128)]  # blocks 5, 6, 7, 8, 12 of the 256² model
STEPS = 3
SIZE, CLASSES, MEMBERS = 256, 5, 10


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def random_maps(n: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    maps = []
    for _ in range(STEPS):
        for c, s in BLOCKS:
            m = torch.empty((n, c, s, s), dtype=torch.float16)
            for i in range(n):  # fill image by image: no fp32 copy of the whole stack
                m[i] = torch.randn((c, s, s), generator=g).half()
            maps.append(m)
    return maps


def random_masks(n: int):
    import torch

    g = torch.Generator().manual_seed(1)
    masks = torch.randint(0, CLASSES, (n, SIZE, SIZE), generator=g)
    masks[:, :8] = 255
    return masks


def variant(name: str, args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO))
    from engine.segmentation.classifier_training import FitConfig, fit_ensemble, labelled_pixels
    from engine.segmentation.pixel_classifier import EnsembleMLP, hidden_sizes, naive_pixel_features

    cfg = FitConfig(members=MEMBERS, max_epochs=args.epochs, max_pixels=args.max_pixels, batch_size=512,
                    val_fraction=0.1)
    base = rss_mb()
    n = args.images if name in ("fit-factorised",) else (args.naive_images if name == "fit-naive" else 1)
    maps, masks = random_maps(n), random_masks(n)
    D = sum(m.shape[1] for m in maps)
    after_maps = rss_mb()
    t0 = time.perf_counter()
    extra: dict = {}
    if name == "fit-factorised":
        _, stats = fit_ensemble(maps, masks, CLASSES, cfg)
        extra = {"train_pixels": stats["train_pixels"], "epochs": stats["epochs"]}
    elif name == "fit-naive":
        # the reference: full-resolution features of every image, as pixel rows (N*H*W, D) fp32
        feats = torch.stack([naive_pixel_features([m[i] for m in maps], (SIZE, SIZE)) for i in range(n)])
        del maps
        rows = feats.permute(0, 2, 3, 1).reshape(-1, D)  # the copy on reshape
        extra["naive_tensor_gb"] = feats.numel() * 4 / 1e9
        del feats
        g = torch.Generator().manual_seed(0)
        pix = labelled_pixels(masks, CLASSES)
        pix = pix[torch.randperm(len(pix), generator=g)[: args.max_pixels]]
        flat = pix[:, 0] * SIZE * SIZE + pix[:, 1] * SIZE + pix[:, 2]
        y = masks.flatten()[flat]
        model = EnsembleMLP(D, CLASSES, hidden_sizes("ddpm", CLASSES), MEMBERS)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        n_train = int(len(flat) * 0.9)
        for _ in range(args.epochs):
            order = torch.randperm(n_train, generator=g)
            for s in range(0, n_train - 1, 512):
                idx = order[s:s + 512]
                logits = model(rows[flat[idx]])
                loss = F.cross_entropy(logits.reshape(-1, CLASSES), y[idx].repeat(MEMBERS)) * MEMBERS
                opt.zero_grad()
                loss.backward()
                opt.step()
        extra["train_pixels"] = n_train
    else:
        model = EnsembleMLP(D, CLASSES, hidden_sizes("ddpm", CLASSES), MEMBERS).eval()
        one = [m[0].float() for m in maps]
        del maps
        after_maps = rss_mb()
        t0 = time.perf_counter()
        with torch.no_grad():
            if name == "predict-factorised":
                logits = model.predict_logits(one, (SIZE, SIZE))
            else:
                x = naive_pixel_features(one, (SIZE, SIZE)).reshape(D, -1).T.contiguous()
                logits = model(x).transpose(1, 2).reshape(MEMBERS, CLASSES, SIZE, SIZE)
        extra["logits_shape"] = list(logits.shape)
    return {"variant": name, "images": n, "feature_dim": D, "seconds": time.perf_counter() - t0,
            "rss_base_mb": base, "rss_after_maps_mb": after_maps, "peak_rss_mb": rss_mb(), **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--naive-images", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-pixels", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="fit-factorised,fit-naive,predict-factorised,predict-naive")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(variant(args.variant, args)))
        return
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(args.threads))
    results = {}
    for name in args.variants.split(","):
        cmd = [sys.executable, __file__, "--variant", name, "--images", str(args.images), "--naive-images",
               str(args.naive_images), "--epochs", str(args.epochs), "--max-pixels", str(args.max_pixels),
               "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"{name}: failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{name:19s} N={r['images']:2d} D={r['feature_dim']}  peak RSS {r['peak_rss_mb'] / 1024:6.2f} GB "
              f"(process base {r['rss_base_mb']:.0f} MB, with maps {r['rss_after_maps_mb']:.0f} MB)  "
              f"{r['seconds']:6.2f} s" + (f"  train px {r['train_pixels']}" if "train_pixels" in r else ""))
    if "fit-naive" in results:
        r = results["fit-naive"]
        per_image = (r["peak_rss_mb"] - r["rss_base_mb"]) / r["images"]
        est = (r["rss_base_mb"] + per_image * args.images) / 1024
        print(f"naive fit extrapolated linearly to {args.images} images: ~{est:.1f} GB peak "
              f"({per_image / 1024:.2f} GB per image measured on {r['images']})")
    if {"predict-factorised", "predict-naive"} <= results.keys():
        f, n = results["predict-factorised"], results["predict-naive"]
        print(f"whole-image prediction: factorised +{(f['peak_rss_mb'] - f['rss_after_maps_mb']):.0f} MB "
              f"{f['seconds']:.2f} s vs naive +{(n['peak_rss_mb'] - n['rss_after_maps_mb']):.0f} MB {n['seconds']:.2f} s "
              f"({n['seconds'] / f['seconds']:.1f}x)")


if __name__ == "__main__":
    main()
