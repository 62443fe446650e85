"""Samplers as swappable objects with one small interface (diffusers-style): timesteps + step().

`DDPMSampler` is ancestral sampling (Ho et al. 2020); `DDIMSampler` is Song et al. 2021's implicit
sampler (eta=0 deterministic, eta=1 matches DDPM's posterior variance). Both run on a respaced process.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .gaussian import GaussianDiffusion, Model, _take
from .schedules import space_timesteps


class Sampler:
    """Base: holds the respaced process; `timesteps` runs from noisiest to cleanest (indices into it)."""

    def __init__(self, diffusion: GaussianDiffusion, num_steps: int | None = None):
        steps = diffusion.num_timesteps if num_steps is None else num_steps
        self.process = diffusion.respace(space_timesteps(diffusion.num_timesteps, steps))
        self.timesteps = list(range(self.process.num_timesteps))[::-1]

    def step(self, model: Model, x: torch.Tensor, i: int, noise: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, model: Model, shape: tuple[int, ...], generator: torch.Generator,
               device: torch.device | str = "cpu", progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Run the whole chain from pure noise; `progress(done, total)` is called after every step."""
        x = torch.randn(shape, generator=generator).to(device)
        for k, i in enumerate(self.timesteps):
            noise = torch.randn(shape, generator=generator).to(device)
            with torch.inference_mode():
                x = self.step(model, x, i, noise)
            if progress:
                progress(k + 1, len(self.timesteps))
        return x


class DDPMSampler(Sampler):
    """x_{t-1} = mean + exp(½ log var)·z (no noise at the last step)."""

    def step(self, model: Model, x: torch.Tensor, i: int, noise: torch.Tensor | None) -> torch.Tensor:
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        p = self.process.p_mean_variance(model, x, t)
        if i == 0 or noise is None:
            return p["mean"]
        return p["mean"] + torch.exp(0.5 * p["log_variance"]) * noise


class DDIMSampler(Sampler):
    """x_{t-1} = sqrt(ab_prev)·x0 + sqrt(1-ab_prev-σ²)·eps + σ·z with σ set by eta."""

    def __init__(self, diffusion: GaussianDiffusion, num_steps: int | None = None, eta: float = 0.0):
        super().__init__(diffusion, num_steps)
        if not math.isfinite(eta) or eta < 0:  # NaN/Inf would turn every sample black
            raise ValueError(f"eta must be a finite number >= 0, got {eta}")
        self.eta = eta

    def step(self, model: Model, x: torch.Tensor, i: int, noise: torch.Tensor | None) -> torch.Tensor:
        pr = self.process
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        p = pr.p_mean_variance(model, x, t)
        eps = pr.eps_from_x0(x, t, p["pred_x0"])
        ab = _take(pr.alphas_cumprod, t, x.ndim)
        ab_prev = _take(pr.alphas_cumprod_prev, t, x.ndim)
        sigma = self.eta * torch.sqrt((1 - ab_prev) / (1 - ab)) * torch.sqrt(1 - ab / ab_prev)
        mean = p["pred_x0"] * torch.sqrt(ab_prev) + torch.sqrt((1 - ab_prev - sigma**2).clamp(min=0)) * eps
        if i == 0 or noise is None:
            return mean
        return mean + sigma * noise


SAMPLERS = {"ddpm": DDPMSampler, "ddim": DDIMSampler}


def make_sampler(name: str, diffusion: GaussianDiffusion, num_steps: int | None = None, eta: float = 0.0) -> Sampler:
    """Build a sampler by name; DDIM takes `eta`."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    if name == "ddim":
        return DDIMSampler(diffusion, num_steps, eta)
    return DDPMSampler(diffusion, num_steps)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N,3,H,W) in [-1,1] → (N,H,W,3) uint8."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
