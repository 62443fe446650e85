"""Train-time augmentation of the labelled frames: more (image, mask) pairs for the pixel ensemble to fit.

Twenty labelled frames show only a few iris colours, pupil sizes and tool poses; the classifier then mistakes
a dark iris for pupil on frames unlike them. Each augmented copy of a labelled frame is warped (scale, rotation,
shift; the mask with the same map, nearest-neighbour, pixels from outside the frame ignored), mirrored on every
other copy, and colour-jittered (per-channel gain, brightness, contrast, saturation). Its diffusion features are
extracted like any frame's, so the head learns from activations of plausible new frames, not of pixel tricks.
Seeded: the same (frames, copies, seed) always give the same copies. Used by `fit --augment K` and chosen or not
by cross-validation in `fit --recipe auto` (only training folds' frames are augmented; engine/scoring/cv.py).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..data.classes import IGNORE_INDEX

MAX_COPIES = 16  # each copy is one more frame of features held in memory
SCALE_RANGE = 0.15  # zoom factor in [1/1.15, 1.15] (log-uniform): pupil and iris sizes vary across frames
ROTATION_DEG = 20.0  # rotation in [-20°, 20°]: the eye and its tools turn with the camera
SHIFT = 0.1  # translation in [-0.1, 0.1] of the frame's half-width
COLOUR = 0.3  # brightness, contrast and saturation factors in [0.7, 1.3]; channel gains in [0.85, 1.15]


def _uniform(g: torch.Generator, n: int = 1) -> torch.Tensor:
    """n draws from U(-1, 1)."""
    return 2 * torch.rand(n, generator=g, dtype=torch.float64) - 1


def colour_jitter(image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(3,H,W) in [-1,1] → the same frame under another light and camera: gains, brightness, contrast, saturation."""
    x = (image.double() + 1) / 2
    x = x * (1 + COLOUR / 2 * _uniform(g, 3))[:, None, None]
    x = x * (1 + COLOUR * _uniform(g))
    mean = x.mean()
    x = (x - mean) * (1 + COLOUR * _uniform(g)) + mean
    grey = x.mean(0, keepdim=True)
    x = (x - grey) * (1 + COLOUR * _uniform(g)) + grey
    return (x.clamp(0, 1) * 2 - 1).to(image.dtype)


def random_affine(g: torch.Generator) -> torch.Tensor:
    """(1, 2, 3) sampling matrix of `F.affine_grid` (output → input coordinates, normalised to [-1, 1])."""
    scale = math.exp(float(_uniform(g)) * math.log(1 + SCALE_RANGE))
    angle = math.radians(float(_uniform(g)) * ROTATION_DEG)
    tx, ty = (float(v) * SHIFT for v in _uniform(g, 2))
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    return torch.tensor([[[c, -s, tx], [s, c, ty]]], dtype=torch.float32)


def warp(image: torch.Tensor, mask: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one affine map to a (3,H,W) image (bilinear, reflected border) and its (h,w) mask (nearest; pixels that
    come from outside the frame become IGNORE_INDEX). The image and mask may differ in size: the map is in
    normalised coordinates (align_corners=False), so both see the same geometry."""
    grid = F.affine_grid(theta, [1, 3, *image.shape[-2:]], align_corners=False)
    out_image = F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="reflection",
                              align_corners=False)[0].to(image.dtype)
    grid = F.affine_grid(theta, [1, 1, *mask.shape[-2:]], align_corners=False)
    stacked = torch.stack([mask.double(), torch.ones_like(mask, dtype=torch.float64)])[None]
    labels, inside = F.grid_sample(stacked, grid.double(), mode="nearest", padding_mode="zeros",
                                   align_corners=False)[0]
    out_mask = torch.where(inside > 0.5, labels.round().long(), torch.full_like(labels, IGNORE_INDEX, dtype=torch.long))
    return out_image, out_mask.to(mask.dtype)


def augment_labelled(images: torch.Tensor, masks: torch.Tensor, copies: int, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`copies` augmented versions of every labelled frame: images (copies·N,3,H,W), masks (copies·N,h,w) and the
    index of each copy's source frame (copies·N,), copy-major (all frames' first copy, then their second...).
    Even copies (0, 2, ...) are mirrored before the warp."""
    if not 0 <= copies <= MAX_COPIES:
        raise ValueError(f"augment copies must be in 0..{MAX_COPIES}, got {copies}")
    n = len(images)
    if copies == 0 or n == 0:
        return images[:0], masks[:0], torch.zeros(0, dtype=torch.long)
    g = torch.Generator().manual_seed(int(seed))
    out_images, out_masks = [], []
    for k in range(copies):
        for image, mask in zip(images, masks):
            if k % 2 == 0:
                image, mask = image.flip(-1), mask.flip(-1)
            image, mask = warp(image, mask, random_affine(g))
            out_images.append(colour_jitter(image, g))
            out_masks.append(mask)
    return torch.stack(out_images), torch.stack(out_masks), torch.arange(n).repeat(copies)


class AugmentedMaps:
    """Feature maps of augmented copies and their masks, with each copy's source frame, so that a fit on a subset of
    frames (a CV fold) takes only the copies of those frames."""

    def __init__(self, maps: list[torch.Tensor], masks: torch.Tensor, source: torch.Tensor) -> None:
        self.maps, self.masks, self.source = maps, masks, source

    @classmethod
    def extract(cls, images: torch.Tensor, masks: torch.Tensor, copies: int, seed: int,
                features: Callable[[torch.Tensor], list[torch.Tensor]]) -> "AugmentedMaps":
        """`augment_labelled`'s copies of these frames with their features (`features`: images → stacked maps)."""
        aug_images, aug_masks, source = augment_labelled(images, masks, copies, seed)
        return cls(features(aug_images), aug_masks, source)

    def with_frames(self, maps: list[torch.Tensor], masks: torch.Tensor, frames: torch.Tensor | None = None
                    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The given frames' maps and masks followed by the copies whose source is in `frames` (default: all)."""
        keep = torch.ones(len(self.source), dtype=torch.bool) if frames is None else torch.isin(self.source, frames)
        return ([torch.cat([m, a[keep].to(m.dtype)]) for m, a in zip(maps, self.maps)],
                torch.cat([masks, self.masks[keep].to(masks.dtype)]))
