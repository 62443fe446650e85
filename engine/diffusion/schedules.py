"""Noise schedules: beta_t for t = 0..T-1, for any number of steps T."""
from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError

#: The linear schedule's largest beta is 0.02·1000/T; it must stay below 1, so T > 20.
MIN_LINEAR_TIMESTEPS = 21


def linear_betas(num_timesteps: int) -> np.ndarray:
    """Ho et al.'s linear schedule 1e-4..0.02 for T=1000, rescaled by 1000/T so any T spans the same process.

    (The same rescaling as guided-diffusion, so T=4000 as in the study gives 2.5e-5..5e-3.)
    """
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule: alpha_bar(t) = cos²((t/T + s)/(1 + s)·π/2), betas clipped."""

    def alpha_bar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    t = np.arange(num_timesteps)
    betas = [min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta) for i in t]
    return np.array(betas, dtype=np.float64)


SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas}


def make_betas(name: str, num_timesteps: int) -> np.ndarray:
    """Betas of a named schedule; unknown names list the valid ones."""
    if name not in SCHEDULES:
        raise ConfigError(f"diffusion schedule: unknown noise schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    if num_timesteps < 1 or (name == "linear" and num_timesteps < MIN_LINEAR_TIMESTEPS):
        low = MIN_LINEAR_TIMESTEPS if name == "linear" else 1
        raise ConfigError(f"diffusion num_timesteps must be >= {low} for the {name} schedule, got {num_timesteps}")
    return SCHEDULES[name](num_timesteps)


def space_timesteps(num_timesteps: int, count: int) -> list[int]:
    """`count` evenly spaced timesteps out of 0..T-1 (always includes 0 and ends near T-1)."""
    if not 1 <= count <= num_timesteps:
        raise ConfigError(f"sampling steps must be in 1..{num_timesteps} (--sampling-steps), got {count}")
    if count == 1:
        return [num_timesteps - 1]
    frac = (num_timesteps - 1) / (count - 1)
    return sorted({int(round(i * frac)) for i in range(count)})
