"""Fréchet colour distance against a naive computation, and its response to a colour cast."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from engine.scoring.colour_stats import colour_report, colour_vectors, frechet_distance


def test_colour_vectors_and_frechet_match_a_naive_computation() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (12, 5, 7, 3), dtype=np.uint8)
    v = colour_vectors(imgs)
    i = 3
    px = imgs[i].reshape(-1, 3) / 255.0
    assert np.allclose(v[i], np.r_[px.mean(0), px.std(0)])
    a, b = rng.normal(size=(40, 6)), rng.normal(0.3, 1.2, size=(50, 6))
    s1, s2 = np.cov(a.T), np.cov(b.T)
    naive = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(
        np.real(linalg.sqrtm(s1 @ s2)))
    assert frechet_distance(a, b) == pytest.approx(naive, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_a_colour_cast_raises_the_distance() -> None:
    rng = np.random.default_rng(1)
    real = rng.uniform(0.2, 0.8, (30, 8, 8, 3))
    same = rng.uniform(0.2, 0.8, (30, 8, 8, 3))
    cast = same.copy()
    cast[::2, ..., 2] = np.clip(cast[::2, ..., 2] + 0.3, 0, 1)  # every other frame tinted blue
    assert colour_report(cast, real)["frechet_colour_distance"] > 5 * colour_report(same, real)["frechet_colour_distance"]
