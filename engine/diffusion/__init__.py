"""Diffusion process, schedules and samplers (independent of any network)."""
from .gaussian import GaussianDiffusion
from .samplers import DDIMSampler, DDPMSampler, make_sampler
from .schedules import make_betas, space_timesteps

__all__ = ["GaussianDiffusion", "DDIMSampler", "DDPMSampler", "make_sampler", "make_betas", "space_timesteps"]
