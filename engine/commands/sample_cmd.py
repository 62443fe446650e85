"""`sample`: draw images from a pretrained run with DDPM or DDIM."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import json_text
from ..diffusion.samplers import DEFAULT_SAMPLER, SAMPLERS
from .argtypes import MAX_SAMPLE_BATCH, MAX_SAMPLES, MAX_STEPS, bounded_int, device, finite_float, seed_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate samples from a run")
    p.add_argument("--run", required=True, help="run directory or guided-diffusion .pt")
    p.add_argument("--n", type=bounded_int(1, MAX_SAMPLES, "all samples are held in memory for the grid"), default=16,
                   help="number of samples to draw")
    p.add_argument("--sampler", choices=list(SAMPLERS), default=DEFAULT_SAMPLER,
                   help="; ".join(f"{name}: {cls.description}" for name, cls in SAMPLERS.items()))
    p.add_argument("--sampling-steps", type=bounded_int(1, MAX_STEPS), default=50,
                   help="denoising steps (the process is respaced to this many of its T timesteps)")
    p.add_argument("--eta", type=finite_float(0.0), default=0.0, help="DDIM noise (0 = deterministic)")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed (batch b uses seed·100003 + b)")
    p.add_argument("--batch-size", type=bounded_int(1, MAX_SAMPLE_BATCH, "images through the UNet at once"), default=16,
                   help="samples drawn per forward pass")
    p.add_argument("--out", required=True, help="folder for sample PNGs and grid.png")
    p.add_argument("--device", type=device, default="cpu", help="torch device: cpu, cuda, cuda:N or mps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..output_lock import OutputLock
    from ..diffusion.sampling import generate_samples

    with OutputLock(args.out):
        paths = generate_samples(args.run, args.n, args.sampler, args.sampling_steps, args.seed, Path(args.out),
                                 eta=args.eta, batch_size=args.batch_size, device=args.device)
    print(json_text({"n": len(paths) - 1, "grid": str(paths[-1]), "out": args.out}))
    return 0
