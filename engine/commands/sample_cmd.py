"""`sample`: draw images from a pretrained run with DDPM or DDIM."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import json_text
from .argtypes import MAX_SAMPLE_BATCH, MAX_SAMPLES, MAX_STEPS, bounded_int, device, finite_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate samples from a run")
    p.add_argument("--run", required=True, help="run directory or guided-diffusion .pt")
    p.add_argument("--n", type=bounded_int(1, MAX_SAMPLES, "all samples are held in memory for the grid"), default=16)
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim")
    p.add_argument("--sampling-steps", type=bounded_int(1, MAX_STEPS), default=50)
    p.add_argument("--eta", type=finite_float(0.0), default=0.0, help="DDIM noise (0 = deterministic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=bounded_int(1, MAX_SAMPLE_BATCH, "images through the UNet at once"), default=16)
    p.add_argument("--out", required=True, help="folder for sample PNGs and grid.png")
    p.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:N or mps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..output_lock import OutputLock
    from ..sampling import generate_samples

    with OutputLock(args.out):
        paths = generate_samples(args.run, args.n, args.sampler, args.sampling_steps, args.seed, Path(args.out),
                                 eta=args.eta, batch_size=args.batch_size, device=args.device)
    print(json_text({"n": len(paths) - 1, "grid": str(paths[-1]), "out": args.out}))
    return 0
