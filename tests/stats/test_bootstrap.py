"""Bootstrap intervals and the paired test against a naive loop over resamples (same seeded indices)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.scoring.bootstrap import bootstrap_miou, miou_of_counts, paired_bootstrap, resample_indices
from engine.methods.compare_stats import paired_vs, seed_summary
from engine.scoring.metrics import ConfusionMatrix, summarize

NAMES = ["a", "b", "c", "d"]


def frame_cms(n: int, seed: int, noise: float) -> np.ndarray:
    """Per-frame confusion matrices of a noisy predictor on random 12×12 masks (class d is rare)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        truth = rng.choice(4, size=(12, 12), p=[0.5, 0.3, 0.19, 0.01])
        pred = np.where(rng.random((12, 12)) < noise, rng.integers(0, 4, (12, 12)), truth)
        truth[0, :3] = 255
        out.append(ConfusionMatrix(4).update(pred, truth).matrix)
    return np.stack(out)


def naive_miou(cms: np.ndarray) -> float:
    cm = ConfusionMatrix(4)
    cm.matrix = cms.sum(0)
    return summarize(cm, NAMES)["miou"]


def test_miou_of_counts_matches_metrics_summarize() -> None:
    cms = frame_cms(7, 0, 0.3)
    assert miou_of_counts(cms.sum(0)) == pytest.approx(naive_miou(cms), abs=1e-12)
    assert np.allclose(miou_of_counts(cms), [naive_miou(c[None]) for c in cms])  # batched, absent classes skipped


def test_bootstrap_interval_equals_a_naive_loop() -> None:
    cms = frame_cms(15, 1, 0.4)
    res = bootstrap_miou(cms, n_boot=300, seed=5)
    idx = resample_indices(15, 300, 5)
    boots = np.array([naive_miou(cms[row]) for row in idx])
    assert res["lo"] == pytest.approx(np.quantile(boots, 0.025), abs=1e-12)
    assert res["hi"] == pytest.approx(np.quantile(boots, 0.975), abs=1e-12)
    assert res["miou"] == pytest.approx(naive_miou(cms)) and res["lo"] < res["miou"] < res["hi"]
    assert bootstrap_miou(cms, n_boot=300, seed=5) == res  # seeded
    assert bootstrap_miou(cms, n_boot=300, seed=6) != res


def test_paired_bootstrap_equals_a_naive_loop_and_detects_a_real_gap() -> None:
    good, bad = frame_cms(20, 2, 0.1), frame_cms(20, 2, 0.5)  # same masks (same seed), different noise
    res = paired_bootstrap(good, bad, n_boot=400, seed=1)
    idx = resample_indices(20, 400, 1)
    d = np.array([naive_miou(good[row]) - naive_miou(bad[row]) for row in idx])
    assert res["diff"] == pytest.approx(naive_miou(good) - naive_miou(bad))
    assert res["lo"] == pytest.approx(np.quantile(d, 0.025)) and res["hi"] == pytest.approx(np.quantile(d, 0.975))
    p = min(1.0, 2 * min(((d <= 0).sum() + 1) / 401, ((d >= 0).sum() + 1) / 401))
    assert res["p_value"] == pytest.approx(p) and res["p_value"] < 0.01 and res["lo"] > 0
    same = paired_bootstrap(good, good, n_boot=200, seed=0)
    assert same["diff"] == 0 and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="same frames"):
        paired_bootstrap(good, bad[:5])


def test_seed_summary_and_paired_vs_pool_seeds() -> None:
    s = seed_summary([0, 1, 2], [{"miou": 0.5}, {"miou": 0.6}, {"miou": 0.7}])
    assert s["mean"] == pytest.approx(0.6) and s["sd"] == pytest.approx(0.1) and s["n"] == 3
    a = [frame_cms(10, 3, 0.2), frame_cms(10, 3, 0.3)]
    ref = [frame_cms(10, 3, 0.4), frame_cms(10, 3, 0.45)]
    out = paired_vs({"ddpm": ref, "x": a}, "ddpm", seed=0)
    assert set(out) == {"x"} and out["x"]["reference"] == "ddpm"
    assert out["x"]["diff"] == pytest.approx(naive_miou(a[0] + a[1]) - naive_miou(ref[0] + ref[1]))
    assert paired_vs({"x": a}) == {}
