"""Colour-cast remedies for pretraining: offset noise (batch level) and min-SNR-γ weights, as preset options."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.diffusion import GaussianDiffusion
from engine.diffusion.weighting import min_snr_weights
from engine.training.pretrain import make_batch
from helpers import run_engine


def test_offset_noise_adds_a_per_image_channel_constant_and_leaves_the_rest_unchanged() -> None:
    pool = torch.randint(0, 255, (10, 3, 8, 8), dtype=torch.uint8)
    base = make_batch(pool, 0, 7, 4, 1, 0, 1000, True, True)
    same = make_batch(pool, 0, 7, 4, 1, 0, 1000, True, True, 0.0)
    off = make_batch(pool, 0, 7, 4, 1, 0, 1000, True, True, 0.1)
    assert all(torch.equal(a, b) for a, b in zip(base, same))  # off = the old random stream, bit for bit
    assert torch.equal(base[0], off[0]) and torch.equal(base[1], off[1])
    diff = off[2] - base[2]
    assert torch.allclose(diff, diff[..., :1, :1].expand_as(diff), atol=1e-6)  # constant over each image-channel
    assert 0 < diff[..., 0, 0].abs().mean() < 0.5


def test_min_snr_weights_match_the_formula() -> None:
    d = GaussianDiffusion.from_config("linear", 1000)
    t = torch.tensor([0, 10, 100, 400, 999])
    w = min_snr_weights(d, t, 5.0)
    ab = d.alphas_cumprod[t.numpy()]
    s = ab / (1 - ab)
    assert np.allclose(w.numpy(), np.minimum(s, 5.0) / s, rtol=1e-5)
    assert w[0] < 0.01 and w[-1] == 1.0  # low-noise steps down-weighted, noisy ones untouched
    with pytest.raises(ValueError, match="gamma"):
        min_snr_weights(d, t, 0.0)


def test_pretrain_accepts_the_remedies_and_saves_them(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = run_engine("pretrain", "--data", tiny_data, "--preset", "tiny", "--out", run, "--max-steps", "2",
                     "--no-progress", "--sample-every", "0", "--offset-noise", "0.1", "--min-snr-gamma", "5")
    assert res.returncode == 0, res.stderr[-2000:]
    train = json.loads((run / "config.json").read_text())["train"]
    assert train["offset_noise"] == 0.1 and train["min_snr_gamma"] == 5.0
    bad = run_engine("pretrain", "--data", tiny_data, "--preset", "tiny", "--out", tmp_path / "r2", "--max-steps",
                     "1", "--offset-noise", "-1")
    assert bad.returncode == 2 and "argument --offset-noise: must be >= 0, got -1" in bad.stderr
