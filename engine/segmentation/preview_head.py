"""A fast linear head for Tune's live preview: multinomial logistic regression on diffusion features.

The full pixel-MLP ensemble takes tens of seconds to fit; the preview fits scikit-learn's L2-regularised
multinomial logistic regression (lbfgs) on a seeded subsample of labelled pixels, standardised per
feature. Its weights are folded back onto the raw features, so whole images are predicted with the same
factorisation as the ensemble (design.md §4): logits = Σ_k up(W_k · f_k) + b, only C channels upsampled.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .classifier_training import labelled_pixels
from .pixel_classifier import PixelGatherer
from ..errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreviewConfig:
    """Settings of the preview head (all that its score depends on, with the seed)."""

    max_pixels: int = 12_000
    l2: float = 1.0  # scikit-learn's C (inverse regularisation strength)
    max_iter: int = 40
    seed: int = 0

    def describe(self) -> str:
        return (f"logistic-regression preview: {self.max_pixels:,} pixels, C={self.l2:g}, "
                f"≤{self.max_iter} lbfgs iterations, seed {self.seed}")


@dataclass
class LinearHead:
    """Logits = features · weight + bias on raw (unstandardised) features."""

    weight: torch.Tensor  # (D, C)
    bias: torch.Tensor  # (C,)

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(P, D) pixel features → (P, C) logits (the naive path)."""
        return features.float() @ self.weight + self.bias

    def logits_maps(self, maps: Sequence[torch.Tensor], out_hw: tuple[int, ...]) -> torch.Tensor:
        """Factorised logits of one image from native maps (C_k, h_k, w_k) → (C, H, W)."""
        if sum(f.shape[0] for f in maps) != self.weight.shape[0]:
            raise ValueError(f"feature maps hold {sum(f.shape[0] for f in maps)} channels, the head expects "
                             f"{self.weight.shape[0]}")
        out = self.bias[:, None, None].expand(self.num_classes, *out_hw).clone()
        offset = 0
        for f in maps:
            c = f.shape[0]
            z = torch.einsum("cyx,ck->kyx", f.float(), self.weight[offset:offset + c])
            offset += c
            if tuple(z.shape[-2:]) != tuple(out_hw):
                z = F.interpolate(z[None], size=out_hw, mode="bilinear", align_corners=False)[0]
            out += z
        return out


def fit_preview_head(maps: Sequence[torch.Tensor], masks: torch.Tensor, num_classes: int,
                     cfg: PreviewConfig = PreviewConfig()) -> LinearHead:
    """Fit on stacked native maps (N, C_k, h_k, w_k) and masks (N, H, W) (255 = ignore)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    gather = PixelGatherer(maps, tuple(masks.shape[-2:]))  # type: ignore[arg-type]
    pix = labelled_pixels(masks, num_classes)
    if len(pix) == 0:
        raise UserError("no labelled pixels to train on (all masks empty or ignore)")
    g = torch.Generator().manual_seed(cfg.seed)
    if len(pix) > cfg.max_pixels:
        pix = pix[torch.randperm(len(pix), generator=g)[: cfg.max_pixels]]
    x = gather(pix[:, 0], pix[:, 1], pix[:, 2]).double()  # statistics in float64
    y = masks[pix[:, 0], pix[:, 1], pix[:, 2]].long().numpy()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    xs = ((x - mu) / sd).float().numpy()  # the fit in float32: half the memory traffic of float64
    present = np.unique(y)
    weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64)
    bias = torch.full((num_classes,), -1e4, dtype=torch.float64)  # absent classes are never predicted
    if len(present) == 1:
        bias[int(present[0])] = 0.0
        return LinearHead(weight.float(), bias.float())
    model = LogisticRegression(C=cfg.l2, max_iter=cfg.max_iter, solver="lbfgs")
    # one BLAS thread: the fit is small and memory-bound; on a shared 2-core machine extra BLAS threads
    # only spin (measured 0.4 s with one thread against 8-9 s with two on the loaded reference machine)
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)  # a preview stops early on purpose
        model.fit(xs, y)
    coef = torch.from_numpy(model.coef_).double()  # (K, D) for K present classes (K == 2: one row, binary form)
    inter = torch.from_numpy(model.intercept_).double()
    if len(present) == 2:  # binary logistic regression: logit(class 1) = coef·x + b, class 0 = 0
        coef = torch.cat([torch.zeros_like(coef), coef])
        inter = torch.cat([torch.zeros_like(inter), inter])
    w_raw = (coef / sd).T  # fold the standardisation onto raw features
    b_raw = inter - (coef * (mu / sd)).sum(1)
    for j, cls in enumerate(present):
        weight[:, int(cls)] = w_raw[:, j]
        bias[int(cls)] = b_raw[j]
    return LinearHead(weight.float(), bias.float())
