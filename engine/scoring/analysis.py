"""PCA maps of activations: which image structure a block encodes, shown as RGB.

Components are fitted jointly on the pixels of all given images, so one colour means the same
direction in activation space in every image of the set.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class PCAMaps:
    """RGB maps (N, h, w, 3) at native resolution and (N, H, W, 3) at image resolution, uint8."""

    native: np.ndarray
    upsampled: np.ndarray
    explained_variance_ratio: np.ndarray


def fit_pca(features: torch.Tensor, n_components: int = 3, max_pixels: int = 50_000,
            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(P, C) pixel features → (mean (C,), components (C, k), explained variance ratio (k,)); seeded subsample."""
    x = features.float()
    if len(x) > max_pixels:
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_pixels]]
    mean = x.mean(0)
    xc = x - mean
    _, s, vh = torch.linalg.svd(xc, full_matrices=False)
    k = min(n_components, vh.shape[0])
    var = s**2
    comps = vh[:k].T
    # fix sign ambiguity: make the largest-magnitude loading of each component positive
    signs = torch.sign(comps[comps.abs().argmax(0), torch.arange(k)])
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
    return mean, comps, (var[:k] / var.sum().clamp_min(1e-12))


def pca_rgb(maps: torch.Tensor, image_hw: tuple[int, int], seed: int = 0) -> PCAMaps:
    """(N, C, h, w) activations of one block/timestep → joint-PCA RGB maps, robustly scaled to 0..255."""
    n, c, h, w = maps.shape
    pix = maps.float().permute(0, 2, 3, 1).reshape(-1, c)
    mean, comps, evr = fit_pca(pix, 3, seed=seed)
    proj = (pix - mean) @ comps  # (P, k)
    if proj.shape[1] < 3:
        proj = torch.cat([proj, torch.zeros(len(proj), 3 - proj.shape[1])], dim=1)
    lo = torch.quantile(proj[:: max(1, len(proj) // 100_000)], 0.01, dim=0)
    hi = torch.quantile(proj[:: max(1, len(proj) // 100_000)], 0.99, dim=0)
    rgb = ((proj - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1).reshape(n, h, w, 3)
    up = F.interpolate(rgb.permute(0, 3, 1, 2), size=image_hw, mode="bilinear", align_corners=False)
    to8 = lambda t: (t * 255).round().to(torch.uint8).numpy()  # noqa: E731
    return PCAMaps(to8(rgb), to8(up.permute(0, 2, 3, 1).clamp(0, 1)), evr.numpy())


def shared_pca_rgb(maps: list[torch.Tensor], image_hw: tuple[int, int], seed: int = 0) -> tuple[list[PCAMaps], np.ndarray]:
    """One PCA basis for several blocks of one image ((1, C_b, h_b, w_b) each), so colours are comparable.

    Each block is scaled to unit mean variance per channel (no block dominates by magnitude), brought to the
    largest native grid, and the blocks' channels are concatenated; three joint components are fitted. A
    block's map is the part of the joint projection its own channels contribute, on one colour scale shared
    by all blocks: the same colour means the same joint direction in every block. Returns the maps and the
    joint explained-variance ratios.
    """
    if not maps:
        raise ValueError("shared PCA needs at least one block")
    grid = max((tuple(m.shape[-2:]) for m in maps), key=lambda s: s[0] * s[1])
    scaled, means = [], []
    for m in maps:
        f = m.float()
        f = (f - f.mean(dim=(0, 2, 3), keepdim=True)) / f.var(dim=(0, 2, 3)).mean().clamp_min(1e-12).sqrt()
        scaled.append(f)
        means.append(F.interpolate(f, size=grid, mode="bilinear", align_corners=False) if f.shape[-2:] != grid else f)
    joint = torch.cat(means, dim=1)[0].permute(1, 2, 0).reshape(-1, sum(m.shape[1] for m in maps))
    _, comps, evr = fit_pca(joint, 3, seed=seed)
    projections, offset = [], 0
    for f in scaled:
        c = f.shape[1]
        pix = f[0].permute(1, 2, 0).reshape(-1, c)
        proj = pix @ comps[offset:offset + c]
        offset += c
        if proj.shape[1] < 3:
            proj = torch.cat([proj, torch.zeros(len(proj), 3 - proj.shape[1])], dim=1)
        projections.append(proj.reshape(f.shape[-2], f.shape[-1], 3))
    pooled = torch.cat([p.reshape(-1, 3) for p in projections])
    lo, hi = torch.quantile(pooled, 0.01, dim=0), torch.quantile(pooled, 0.99, dim=0)
    out = []
    for p in projections:
        rgb = ((p - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
        up = F.interpolate(rgb.permute(2, 0, 1)[None], size=image_hw, mode="bilinear", align_corners=False)[0]
        to8 = lambda t: (t * 255).round().to(torch.uint8).numpy()  # noqa: E731
        out.append(PCAMaps(to8(rgb)[None], to8(up.permute(1, 2, 0).clamp(0, 1))[None], evr.numpy()))
    return out, evr.numpy()
