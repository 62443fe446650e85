"""`pretrain`: train the diffusion UNet on the unlabelled pool (torchrun-aware)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import json_text
from ..models.config import PRESETS, Preset, get_preset
from ..training.pools import POOLS
from .argtypes import MAX_STEPS, MAX_TRAIN_BATCH, bounded_int, device, finite_float, seed_int

# flag → TrainConfig field
TRAIN_FLAGS = (("max_steps", "max_steps"), ("batch_size", "batch_size"), ("lr", "lr"), ("save_every", "save_every"),
               ("sample_every", "sample_every"), ("log_every", "log_every"), ("seed", "seed"),
               ("offset_noise", "offset_noise"), ("min_snr_gamma", "min_snr_gamma"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="pretrain a DDPM on the unlabelled frames of a data set")
    p.add_argument("--data", required=True, help="folder data set (its 'unlabeled' split is the pool by default)")
    p.add_argument("--pool", choices=POOLS, default=None,
                   help="which images to pretrain on (default unlabeled; masks are never used; the test split "
                        "never is, unless --include-test-frames)")
    p.add_argument("--include-test-frames", action="store_true",
                   help="also pretrain on the test split's images (the study's protocol, unlabelled use only); "
                        "recorded in the run's config.json")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="model size (default demo; with --resume, the run's own)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--max-steps", type=bounded_int(1, MAX_STEPS),
                   help="stop after this many optimiser steps (default: the preset's: tiny 200, demo 4000, paper 200000)")
    p.add_argument("--batch-size", type=bounded_int(1, MAX_TRAIN_BATCH, "frames through the UNet per step"),
                   help="per-process batch size (default: the preset's)")
    p.add_argument("--lr", type=finite_float(0.0, low_open=True), help="AdamW learning rate (default: the preset's)")
    p.add_argument("--save-every", type=bounded_int(1, MAX_STEPS), help="checkpoint every N steps (default: the preset's)")
    p.add_argument("--sample-every", type=bounded_int(0, MAX_STEPS),
                   help="sample grid every N steps and at the last step; 0 = never (default: the preset's)")
    p.add_argument("--log-every", type=bounded_int(1, MAX_STEPS),
                   help="append a loss line (and update progress.json) every N steps (default: the preset's)")
    p.add_argument("--seed", type=seed_int, help="training seed (default: the preset's, 0)")
    p.add_argument("--offset-noise", type=finite_float(0.0, 1.0),
                   help="colour-cast remedy: std of a per-image, per-channel constant added to the noise "
                        "(e.g. 0.1; default: the preset's, 0 = off)")
    p.add_argument("--min-snr-gamma", type=finite_float(0.0, 1000.0),
                   help="colour-cast remedy: min-SNR-γ loss weighting for eps-prediction (e.g. 5; default: the "
                        "preset's, 0 = off)")
    p.add_argument("--init-from", metavar="RUN",
                   help="start from this run's weights (same preset) instead of a random init: fine-tuning, e.g. "
                        "with a colour-cast remedy; the optimiser starts fresh; recorded in config.json")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, with the settings it was trained with "
                        "(only --max-steps, --save-every, --sample-every, --log-every may change)")
    p.add_argument("--device", type=device, default="cpu", help="torch device: cpu, cuda, cuda:N or mps")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress output (a bar on a terminal, a plain line every 10 s in a log file)")
    p.set_defaults(func=run)


def _resume_base(args: argparse.Namespace) -> Preset | None:
    """On --resume, the run's recorded settings (flags not given keep what the run was trained with)."""
    from ..models.config import DiffusionConfig, TrainConfig, UNetConfig
    from ..models.run import read_run_config

    out = Path(args.out)
    if not args.resume or not (out / "config.json").is_file():
        return None
    meta = read_run_config(out)
    source = str(out / "config.json")
    if args.preset is not None and args.preset != meta.get("preset"):
        return None  # check_resume names the architecture that differs
    train = TrainConfig.from_dict(meta["train"], source) if "train" in meta else get_preset(args.preset or "demo").train
    if args.pool is None:
        args.pool = meta.get("pool", "unlabeled")
    if not args.include_test_frames and meta.get("pool_includes_test") is True:
        args.include_test_frames = True
    return Preset(str(meta.get("preset")), UNetConfig.from_dict(meta["unet"], source),
                  DiffusionConfig.from_dict(meta["diffusion"], source), train)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..training.pretrain import pretrain

    if args.init_from and args.resume:
        raise UserError("--init-from starts a new run; --resume continues one (its start is already recorded)")

    preset = _resume_base(args) or get_preset(args.preset or "demo")
    tc = preset.train
    for flag, attr in TRAIN_FLAGS:
        value = getattr(args, flag)
        if value is not None:
            setattr(tc, attr, value)
    result = pretrain(args.data, preset, args.out, resume=args.resume, device=args.device,
                      progress_bar=not args.no_progress, pool_split=args.pool or "unlabeled",
                      include_test=args.include_test_frames, init_from=args.init_from)
    print(json_text(result))
    return 0
