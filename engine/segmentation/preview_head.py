"""A closed-form linear head for Tune's live preview: shrinkage linear discriminant analysis (LDA).

The full pixel-MLP ensemble takes tens of seconds to fit; the preview fits LDA (class means, one pooled
within-class covariance shrunk towards a multiple of the identity, class priors) on a seeded subsample of
labelled train pixels. LDA needs only per-class counts, per-class feature sums and one Gram matrix, so the
k heads of a k-fold cross-validation come from the same statistics at the cost of k small solves (fold
statistics = all minus the held-out frames'), with no iterations. Standardisation (per feature, from the
fitting rows) makes the shrinkage scale-free; the weights are folded back onto the raw features so whole
images are predicted with the ensemble's factorisation (design.md §4): logits = Σ_k up(W_k · f_k) + b.
Under 4-fold cross-validation on the demo's train frames it scored -0.003..+0.032 mIoU against the logistic
regression it replaced, in a fraction of the time (README, Benchmarks: tune_preview.py).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


log = logging.getLogger(__name__)

ABSENT_BIAS = -1e4  # a class with no training pixel is never predicted


@dataclass(frozen=True)
class PreviewConfig:
    """Settings of the preview (all that its score depends on, with the data and the recipe)."""

    max_pixels: int = 12_000  # labelled train pixels drawn (seeded) for the fit
    shrinkage: float = 0.01  # covariance ← (1-s)·Σ + s·mean(diag Σ)·I on standardised features
    folds: int = 4  # k-fold cross-validation over train frames: the sweep's (engine/scoring/cv.py DEFAULT_FOLDS)
    seed: int = 0  # pixel draw and fold assignment

    def describe(self, n_pixels: int | None = None, n_frames: int | None = None) -> str:
        """One line for the page: what the preview head is and what it was fitted on."""
        pixels = f"{n_pixels:,}" if n_pixels is not None else f"≤{self.max_pixels:,}"
        frames = f" from {n_frames} train frames" if n_frames is not None else " from the train frames"
        return (f"preview: closed-form shrinkage LDA (shrinkage {self.shrinkage:g}) fitted on {pixels} labelled "
                f"pixels{frames} (seed {self.seed})")


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


@dataclass
class LdaStats:
    """Sufficient statistics of labelled pixel rows x (shifted by a fixed vector): per-class counts (C,),
    per-class sums (C, D) and the Gram matrix Σ x xᵀ (D, D), all float64. They add and subtract exactly."""

    counts: torch.Tensor
    sums: torch.Tensor
    gram: torch.Tensor

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> LdaStats:
        """Statistics of rows x (P, D) (already shifted: centred rows keep the float32 Gram accurate) with labels
        y (P,). The Gram product runs in float32 (half the time of float64), sums and the rest in float64."""
        onehot = F.one_hot(y.long(), num_classes).double()
        x32 = x.float()
        return cls(onehot.sum(0), onehot.T @ x.double(), (x32.T @ x32).double())

    def __sub__(self, other: LdaStats) -> LdaStats:
        return LdaStats(self.counts - other.counts, self.sums - other.sums, self.gram - other.gram)


def lda_head(stats: LdaStats, shift: torch.Tensor, shrinkage: float) -> LinearHead:
    """The shrinkage-LDA head of rows whose statistics are `stats`, computed on x − shift, for raw features."""
    counts, sums, gram = stats.counts, stats.sums, stats.gram
    n_cls, dim = sums.shape
    present = (counts > 0).nonzero().flatten()
    weight = torch.zeros(dim, n_cls, dtype=torch.float64)
    bias = torch.full((n_cls,), ABSENT_BIAS, dtype=torch.float64)
    n = float(counts.sum())
    if len(present) == 0:
        raise ValueError("no labelled pixels to fit the preview head on")
    if len(present) == 1:
        bias[present[0]] = 0.0
        return LinearHead(weight.float(), bias.float())
    cnt, s = counts[present], sums[present]
    mean = s.sum(0) / n
    sd = (gram.diagonal() / n - mean ** 2).clamp_min(0).sqrt().clamp_min(1e-6)
    within = (gram - (s.T / cnt) @ s) / max(n - len(present), 1.0)  # pooled within-class covariance
    cov = within / sd[:, None] / sd[None, :]
    target = shrinkage * cov.diagonal().mean().clamp_min(1e-12)
    cov = (1 - shrinkage) * cov
    cov.diagonal().add_(target)  # + s·mean(diag)·I without building an identity matrix
    mu = (s / cnt[:, None] - mean) / sd  # (K, D) standardised class means
    chol, info = torch.linalg.cholesky_ex(cov)
    w = torch.cholesky_solve(mu.T, chol) if int(info) == 0 else torch.linalg.lstsq(cov, mu.T).solution
    b = -0.5 * (mu.T * w).sum(0) + torch.log(cnt / n)
    w_raw = w / sd[:, None]
    weight[:, present] = w_raw
    bias[present] = b - ((shift.double() + mean) @ w_raw)
    return LinearHead(weight.float(), bias.float())


def fit_lda(x: torch.Tensor, y: torch.Tensor, num_classes: int, shrinkage: float = PreviewConfig.shrinkage) -> LinearHead:
    """The naive path: shrinkage LDA from pixel rows x (P, D) and labels y (P,) directly (tests, notebooks)."""
    x = x.double()
    present = torch.unique(y)
    weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64)
    bias = torch.full((num_classes,), ABSENT_BIAS, dtype=torch.float64)
    if len(present) == 1:
        bias[present[0]] = 0.0
        return LinearHead(weight.float(), bias.float())
    mean, sd = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    xs = (x - mean) / sd
    mu = torch.stack([xs[y == c].mean(0) for c in present])
    resid = xs - mu[torch.searchsorted(present, y)]
    cov = resid.T @ resid / (len(y) - len(present))
    cov = (1 - shrinkage) * cov + shrinkage * cov.diagonal().mean() * torch.eye(len(cov), dtype=cov.dtype)
    w = torch.linalg.solve(cov, mu.T)
    prior = torch.tensor([(y == c).sum().item() for c in present], dtype=torch.float64) / len(y)
    b = -0.5 * (mu.T * w).sum(0) + prior.log()
    weight[:, present] = w / sd[:, None]
    bias[present] = b - (mean / sd) @ w
    return LinearHead(weight.float(), bias.float())
