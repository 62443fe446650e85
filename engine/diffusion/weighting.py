"""Loss weighting over timesteps for eps-prediction training.

min-SNR-γ (Hang et al., "Efficient Diffusion Training via Min-SNR Weighting Strategy", ICCV 2023): with
SNR(t) = ᾱ_t / (1 − ᾱ_t), the eps-MSE of timestep t is weighted by min(SNR(t), γ) / SNR(t), which caps the
weight of the low-noise steps (where SNR is huge) relative to the noisy ones, where global structure and
colour are decided.
"""
from __future__ import annotations

import torch


def snr(diffusion, t: torch.Tensor) -> torch.Tensor:
    """SNR(t) = ᾱ_t / (1 − ᾱ_t) for integer timesteps t."""
    ab = torch.as_tensor(diffusion.alphas_cumprod, dtype=torch.float64)[t.cpu().long()]
    return (ab / (1 - ab)).to(torch.float32).to(t.device)


def min_snr_weights(diffusion, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-example weights min(SNR(t), γ) / SNR(t) (1 where SNR ≤ γ); γ must be > 0."""
    if gamma <= 0:
        raise ValueError(f"min-SNR gamma must be > 0, got {gamma}")
    s = snr(diffusion, t)
    return torch.clamp(s, max=gamma) / s
