"""Pixel calibration: expected calibration error with equal-width confidence bins, reliability diagrams, and
temperature scaling (Guo et al., ICML 2017) fitted by minimising the NLL of held-out labelled pixels.

The temperature acts on the log of the ensemble's MEAN probability, p_T ∝ p^(1/T): the argmax — the mask —
never changes, only how sure the probabilities say it is. T = 1 is the identity (old classifiers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

IGNORE = 255
N_BINS = 15


def apply_temperature(probs: torch.Tensor, temperature: float, dim: int = 0) -> torch.Tensor:
    """Probabilities (classes on `dim`) sharpened (T < 1) or softened (T > 1): softmax(log p / T)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if temperature == 1.0:
        return probs
    return torch.softmax(probs.float().clamp_min(1e-12).log() / temperature, dim=dim)


@dataclass
class Reliability:
    """Streaming reliability statistics over pixels: counts, summed confidence and correctness per bin."""

    n_bins: int = N_BINS
    counts: np.ndarray = field(init=False)
    conf_sum: np.ndarray = field(init=False)
    correct_sum: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros(self.n_bins, np.int64)
        self.conf_sum = np.zeros(self.n_bins)
        self.correct_sum = np.zeros(self.n_bins)

    def update(self, probs: torch.Tensor | np.ndarray, truth: np.ndarray) -> Reliability:
        """Add one image: probs (C,H,W), truth (H,W) class ids with 255 = ignore."""
        p = torch.as_tensor(probs).float()
        conf, pred = p.max(dim=0)
        t = np.asarray(truth)
        valid = t != IGNORE
        c, ok = conf.numpy()[valid], (pred.numpy()[valid] == t[valid])
        b = np.clip((c * self.n_bins).astype(int), 0, self.n_bins - 1)
        self.counts += np.bincount(b, minlength=self.n_bins)
        self.conf_sum += np.bincount(b, weights=c, minlength=self.n_bins)
        self.correct_sum += np.bincount(b, weights=ok.astype(float), minlength=self.n_bins)
        return self

    @property
    def ece(self) -> float:
        """Σ_bins (n_b / N) · |accuracy_b − confidence_b|."""
        n = self.counts.sum()
        if not n:
            return float("nan")
        return float(np.abs(self.correct_sum - self.conf_sum).sum() / n)

    def to_dict(self) -> dict[str, Any]:
        """ECE plus the diagram: per bin its edges, pixel count, mean confidence and accuracy (None if empty)."""
        edges = np.linspace(0, 1, self.n_bins + 1)
        bins = []
        for i in range(self.n_bins):
            n = int(self.counts[i])
            bins.append({"lo": round(float(edges[i]), 4), "hi": round(float(edges[i + 1]), 4), "count": n,
                         "confidence": float(self.conf_sum[i] / n) if n else None,
                         "accuracy": float(self.correct_sum[i] / n) if n else None})
        return {"ece": self.ece, "n_pixels": int(self.counts.sum()), "n_bins": self.n_bins, "bins": bins}


def ece(probs: torch.Tensor | np.ndarray, truth: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE of one image (or any (C, ...) probabilities with matching truth)."""
    return Reliability(n_bins).update(probs, truth).ece


def pixels(probs: list[torch.Tensor], truths: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten images to (P, C) probabilities and (P,) labels, ignore pixels dropped."""
    ps, ys = [], []
    for p, t in zip(probs, truths):
        tt = torch.as_tensor(np.asarray(t)).long().flatten()
        keep = tt != IGNORE
        ps.append(torch.as_tensor(p).float().flatten(1).T[keep])
        ys.append(tt[keep])
    return torch.cat(ps), torch.cat(ys)


def nll(probs: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of labels under (P, C) probabilities at a temperature."""
    logp = torch.log_softmax(probs.float().clamp_min(1e-12).log() / temperature, dim=1)
    return float(-logp.gather(1, labels[:, None]).mean())


def fit_temperature(probs: torch.Tensor, labels: torch.Tensor, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T in `bounds` minimising held-out NLL (bounded 1-D search on log T); 1.0 if nothing beats it,
    so the fitted temperature never raises the NLL of the pixels it was fitted on."""
    from scipy.optimize import minimize_scalar

    if len(labels) == 0:
        raise ValueError("no labelled pixels to fit a temperature on")
    logp = probs.float().clamp_min(1e-12).log().double()
    y = labels.long()[:, None]

    def f(log_t: float) -> float:
        return float(-torch.log_softmax(logp / float(np.exp(log_t)), dim=1).gather(1, y).mean())

    res = minimize_scalar(f, bounds=(float(np.log(bounds[0])), float(np.log(bounds[1]))), method="bounded",
                          options={"xatol": 1e-4})
    t = float(np.exp(res.x))
    return t if f(res.x) < f(0.0) else 1.0
