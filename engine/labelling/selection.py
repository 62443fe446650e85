"""Which frames to label next: k-center greedy diversity (Sener & Savarese, ICLR 2018), optionally weighted
by the classifier's uncertainty so that the picks are hard AND unlike each other.

Pure numpy on per-frame vectors (pooled diffusion features); no model here, so the same code drives the
`suggest` command and the active-learning benchmark.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ..errors import UserError


@dataclass(frozen=True)
class Pick:
    """One chosen frame: its index in the candidate list and why it was chosen."""

    index: int
    distance: float  # distance in feature space to the nearest labelled or already-picked frame
    uncertainty: float | None  # the classifier's image score (None without a classifier)
    score: float  # what the greedy step maximised


def standardise(features: np.ndarray) -> np.ndarray:
    """Per-dimension z-scores over the rows (constant dimensions become 0), so no channel dominates distances."""
    x = np.asarray(features, dtype=np.float64)
    mu, sd = x.mean(axis=0), x.std(axis=0)
    return (x - mu) / np.where(sd > 1e-12, sd, 1.0)


def _min_dist(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Euclidean distance of every row of x to its nearest row of centres (inf when there are none)."""
    if len(centres) == 0:
        return np.full(len(x), np.inf)
    d2 = (x**2).sum(1)[:, None] - 2 * x @ centres.T + (centres**2).sum(1)[None]
    return np.sqrt(np.clip(d2, 0, None)).min(axis=1)


def k_center_greedy(candidates: np.ndarray, labelled: np.ndarray, n: int,
                    uncertainty: np.ndarray | None = None, exclude: np.ndarray | None = None) -> list[Pick]:
    """Pick `n` candidate rows, one at a time, each maximising its distance to the labelled rows and the
    picks so far (k-center greedy). With `uncertainty`, the step maximises rank(uncertainty) × distance /
    max distance instead: an uncertain frame wins unless it nearly duplicates one already chosen.

    With nothing labelled, the first pick is the candidate closest to the candidates' mean (a typical
    frame; deterministic). `exclude` (bool per candidate) removes rows from consideration.
    """
    x = np.asarray(candidates, dtype=np.float64)
    lab = np.asarray(labelled, dtype=np.float64).reshape(-1, x.shape[1]) if len(labelled) else np.zeros((0, x.shape[1]))
    allowed = np.ones(len(x), dtype=bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    n = min(n, int(allowed.sum()))
    if uncertainty is not None:
        u = np.asarray(uncertainty, dtype=np.float64)
        if u.shape != (len(x),):
            raise UserError(f"uncertainty has shape {u.shape}, expected ({len(x)},)")
        # rank-normalised to (0, 1]: the scale of the score (nats of JS) does not matter, only the order
        weight = (np.argsort(np.argsort(u, kind="stable"), kind="stable") + 1) / len(u)
    dist = _min_dist(x, lab)
    picks: list[Pick] = []
    for _ in range(n):
        if not np.isfinite(dist).any():  # nothing labelled or picked yet
            centre = x[allowed].mean(axis=0)
            d0 = np.sqrt(((x - centre) ** 2).sum(1))
            d0[~allowed] = np.inf
            i = int(np.argmin(d0))
            picks.append(Pick(i, float("inf"), None if uncertainty is None else float(u[i]), 0.0))
        else:
            d = np.where(allowed, dist, -np.inf)
            if uncertainty is None:
                score = d
            else:
                dmax = float(np.max(d[allowed])) if allowed.any() else 1.0
                score = np.where(allowed, weight * (d / dmax if dmax > 0 else 1.0), -np.inf)
            i = int(np.argmax(score))
            picks.append(Pick(i, float(dist[i]), None if uncertainty is None else float(u[i]), float(score[i])))
        allowed[i] = False
        dist = np.minimum(dist, np.sqrt(np.clip(((x - x[i]) ** 2).sum(1), 0, None)))
    return picks


def top_uncertain(uncertainty: np.ndarray, n: int, exclude: np.ndarray | None = None) -> list[int]:
    """Indices of the `n` most uncertain rows (ties by index), for the uncertainty-only strategy."""
    u = np.asarray(uncertainty, dtype=np.float64).copy()
    if exclude is not None:
        u[np.asarray(exclude, dtype=bool)] = -np.inf
    order = np.argsort(-u, kind="stable")
    return [int(i) for i in order[:n] if np.isfinite(u[i])]
