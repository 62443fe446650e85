"""`pretrain`: train the diffusion UNet on the unlabelled pool (torchrun-aware)."""
from __future__ import annotations

import argparse

from ..atomic import json_text
from ..models.config import PRESETS, get_preset
from ..training.pools import POOLS
from .argtypes import MAX_STEPS, MAX_TRAIN_BATCH, bounded_int, device, finite_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="pretrain a DDPM on the unlabelled frames of a data set")
    p.add_argument("--data", required=True, help="folder data set (its 'unlabeled' split is the pool by default)")
    p.add_argument("--pool", choices=POOLS, default="unlabeled",
                   help="which images to pretrain on (masks are never used; the test split never is)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--max-steps", type=bounded_int(1, MAX_STEPS), help="stop after this many optimiser steps")
    p.add_argument("--batch-size", type=bounded_int(1, MAX_TRAIN_BATCH, "frames through the UNet per step"),
                   help="per-process batch size")
    p.add_argument("--lr", type=finite_float(0.0, low_open=True))
    p.add_argument("--save-every", type=bounded_int(1, MAX_STEPS), help="checkpoint every N steps")
    p.add_argument("--sample-every", type=bounded_int(0, MAX_STEPS), help="sample grid every N steps (0 = never)")
    p.add_argument("--log-every", type=bounded_int(1, MAX_STEPS), help="append a loss line every N steps")
    p.add_argument("--seed", type=int)
    p.add_argument("--offset-noise", type=float, help="colour-cast remedy: std of a per-image, per-channel noise "
                   "offset (e.g. 0.1; default off)")
    p.add_argument("--min-snr-gamma", type=float, help="colour-cast remedy: min-SNR-γ loss weighting (e.g. 5; "
                   "default off)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training.pretrain import pretrain

    for flag in ("offset_noise", "min_snr_gamma"):
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(args, flag)}")
    preset = get_preset(args.preset)
    tc = preset.train
    for flag, attr in (("max_steps", "max_steps"), ("batch_size", "batch_size"), ("lr", "lr"),
                       ("save_every", "save_every"), ("sample_every", "sample_every"), ("log_every", "log_every"),
                       ("seed", "seed"), ("offset_noise", "offset_noise"), ("min_snr_gamma", "min_snr_gamma")):
        value = getattr(args, flag)
        if value is not None:
            setattr(tc, attr, value)
    result = pretrain(args.data, preset, args.out, resume=args.resume, device=args.device,
                      progress_bar=not args.no_progress, pool_split=args.pool)
    print(json_text(result))
    return 0
