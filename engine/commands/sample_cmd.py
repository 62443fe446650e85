"""`sample`: draw images from a pretrained run with DDPM or DDIM."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..diffusion.samplers import DEFAULT_SAMPLER, SAMPLERS
from .argtypes import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate samples from a run")
    p.add_argument("--run", required=True, help="run directory or guided-diffusion .pt")
    p.add_argument("--n", type=positive_int, default=16, help="number of samples to draw")
    p.add_argument("--sampler", choices=list(SAMPLERS), default=DEFAULT_SAMPLER,
                   help="; ".join(f"{name}: {cls.description}" for name, cls in SAMPLERS.items()))
    p.add_argument("--sampling-steps", type=positive_int, default=50,
                   help="denoising steps (the process is respaced to this many of its T timesteps)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise (0 = deterministic)")
    p.add_argument("--seed", type=int, default=0, help="random seed (batch b uses seed·100003 + b)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="samples drawn per forward pass")
    p.add_argument("--out", required=True, help="folder for sample PNGs and grid.png")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:0 …")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..sampling import generate_samples

    paths = generate_samples(args.run, args.n, args.sampler, args.sampling_steps, args.seed, Path(args.out),
                             eta=args.eta, batch_size=args.batch_size, device=args.device)
    print(json.dumps({"n": len(paths) - 1, "grid": str(paths[-1]), "out": args.out}))
    return 0
