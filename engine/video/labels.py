"""Full-size class ids from model-size class probabilities (the writer's per-frame hot spot).

Bilinear upsampling (align_corners=False, like `probs_to_original`) then the first maximum over classes,
taken as a running comparison over class planes: the same ids as `up.argmax(dim=0)` (ties go to the lower
id), about 10× cheaper at 480p, where torch's argmax over the leading dimension of a (C, H, W) tensor
strides through memory (28 ms vs 2.6 ms measured on this project's 2-core CPU).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def upsampled_labels(probs: torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
    """(C, h, w) probabilities → uint8 (H, W) class ids of their bilinear upsampling to `hw`."""
    up = probs[None].float()
    if tuple(probs.shape[-2:]) != tuple(hw):
        up = F.interpolate(up, size=tuple(hw), mode="bilinear", align_corners=False)
    up = up[0]
    best = up[0].clone()
    labels = torch.zeros(best.shape, dtype=torch.uint8)
    for c in range(1, up.shape[0]):
        better = up[c] > best  # strictly: a tie keeps the lower id, as argmax does
        labels.masked_fill_(better, c)
        torch.maximum(best, up[c], out=best)
    return labels.numpy()
