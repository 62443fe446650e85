"""UNet speed on this machine: params, forward time and training-step time per preset (median of 5).

    python bench/unet_speed.py                  # tiny, demo, paper (paper: forward at batch 1 only)
    python bench/unet_speed.py --paper-train    # also time a paper training step (slow, ~9 GB RAM)
    python bench/unet_speed.py --presets tiny,demo --threads 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.diffusion import GaussianDiffusion  # noqa: E402
from engine.models.config import get_preset  # noqa: E402
from engine.models.unet import UNetModel  # noqa: E402


def _median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_preset(name: str, fwd_batch: int, train_batch: int | None, repeats: int) -> dict:
    preset = get_preset(name)
    cfg, dcfg = preset.unet, preset.diffusion
    torch.manual_seed(0)
    model = UNetModel(cfg)
    params = sum(p.numel() for p in model.parameters())
    s = cfg.image_size
    x = torch.randn(fwd_batch, cfg.in_channels, s, s)
    t = torch.randint(0, dcfg.num_timesteps, (fwd_batch,))
    model.eval()

    def forward() -> None:
        with torch.inference_mode():
            model(x, t)

    row = {"preset": name, "params": params, "size": s, "fwd_batch": fwd_batch,
           "forward_s": _median_time(forward, repeats)}
    if train_batch:
        model.train()
        diffusion = GaussianDiffusion.from_config(dcfg.schedule, dcfg.num_timesteps, dcfg.learn_sigma, dcfg.loss)
        opt = torch.optim.AdamW(model.parameters(), lr=preset.train.lr)
        x0 = torch.rand(train_batch, cfg.in_channels, s, s) * 2 - 1
        tt = torch.randint(0, dcfg.num_timesteps, (train_batch,))
        noise = torch.randn_like(x0)

        def step() -> None:
            loss = diffusion.training_losses(model, x0, tt, noise).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        row.update(train_batch=train_batch, train_step_s=_median_time(step, repeats))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,demo,paper")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--paper-train", action="store_true", help="also time a paper-preset training step (batch 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.presets.split(","):
        if name == "paper":
            rows.append(bench_preset(name, 1, 1 if args.paper_train else None, args.repeats))
        else:
            rows.append(bench_preset(name, 3, 4, args.repeats))
        print(f"done {name}", file=sys.stderr, flush=True)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} after 1 warm-up")
    print(f"{'preset':<7} {'params':>12} {'px':>4} {'forward':>18} {'train step':>18}")
    for r in rows:
        fwd = f"{r['forward_s'] * 1000:9.1f} ms (b={r['fwd_batch']})"
        trn = f"{r['train_step_s'] * 1000:9.1f} ms (b={r['train_batch']})" if "train_step_s" in r else f"{'skipped':>18}"
        print(f"{r['preset']:<7} {r['params']:>12,} {r['size']:>4} {fwd:>18} {trn:>18}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
