"""Whole-frame colour casts, measured: Fréchet distance between the per-image colour statistics of two sets.

Each image becomes a 6-vector (mean and standard deviation of R, G, B over its pixels, in [0, 1]); each set
is summarised by the mean and covariance of its vectors, and the Fréchet distance between the two Gaussians
is |μ1 − μ2|² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½) (the FID formula on a 6-d colour descriptor instead of Inception
features). Samples with casts shift the means and inflate the spread of the colour means, raising it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import linalg


def colour_vectors(images: np.ndarray) -> np.ndarray:
    """(N, 6) per-image [mean R, G, B, std R, G, B] of (N, H, W, 3) uint8 or [0, 1] float images."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) images, got {x.shape}")
    if np.asarray(images).dtype == np.uint8:
        x = x / 255.0
    flat = x.reshape(len(x), -1, 3)
    return np.concatenate([flat.mean(1), flat.std(1)], axis=1)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two (N, D) sets of vectors."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def colour_report(samples: np.ndarray, real: np.ndarray) -> dict[str, Any]:
    """Fréchet colour distance plus the mean colour and the spread of frame means of each set."""
    va, vb = colour_vectors(samples), colour_vectors(real)
    return {"frechet_colour_distance": frechet_distance(va, vb), "n_samples": len(va), "n_real": len(vb),
            "samples_mean_rgb": va[:, :3].mean(0).round(4).tolist(), "real_mean_rgb": vb[:, :3].mean(0).round(4).tolist(),
            "samples_frame_mean_sd": va[:, :3].std(0).round(4).tolist(),
            "real_frame_mean_sd": vb[:, :3].std(0).round(4).tolist()}
