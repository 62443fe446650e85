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


def test_init_from_fine_tunes_another_runs_weights(tiny_data: Path, tmp_path: Path) -> None:
    """--init-from starts from the source run's EMA weights (recorded with its hash), not from a random init."""
    import torch

    from engine.models.run import load_run

    src = tmp_path / "src"
    assert run_engine("pretrain", "--data", tiny_data, "--preset", "tiny", "--out", src, "--max-steps", "3",
                      "--no-progress", "--sample-every", "0", "--seed", "7").returncode == 0  # another random init
    tuned, fresh = tmp_path / "tuned", tmp_path / "fresh"
    for out, extra in ((tuned, ["--init-from", str(src)]), (fresh, [])):
        # a vanishing learning rate: after one step the weights are where training started
        res = run_engine("pretrain", "--data", tiny_data, "--preset", "tiny", "--out", out, "--max-steps", "1",
                         "--lr", "1e-12", "--no-progress", "--sample-every", "0", "--offset-noise", "0.1", *extra)
        assert res.returncode == 0, res.stderr[-2000:]
    source = load_run(src, "cpu")
    meta = json.loads((tuned / "config.json").read_text())
    assert meta["init_from"] == {"run": str(src), "weights_hash": source.weights_hash}
    assert "init_from" not in json.loads((fresh / "config.json").read_text())
    a, b, c = (load_run(p, "cpu").model.state_dict() for p in (src, tuned, fresh))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not all(torch.allclose(a[k], c[k], atol=1e-6) for k in a)
    # a resumed fine-tune keeps its record; --init-from with --resume, or from another architecture, is refused
    assert run_engine("pretrain", "--data", tiny_data, "--out", tuned, "--max-steps", "2", "--resume",
                      "--no-progress").returncode == 0
    assert json.loads((tuned / "config.json").read_text())["init_from"] == meta["init_from"]
    both = run_engine("pretrain", "--data", tiny_data, "--out", tuned, "--max-steps", "3", "--resume",
                      "--init-from", str(src))
    assert both.returncode == 2 and "--init-from starts a new run; --resume continues one" in both.stderr
    other = run_engine("pretrain", "--data", tiny_data, "--preset", "demo", "--out", tmp_path / "o", "--max-steps",
                       "1", "--init-from", str(src), "--no-progress")
    assert other.returncode != 0 and f"--init-from {src}: that run's UNet differs from preset 'demo'" in other.stderr
    assert not (tmp_path / "o" / "config.json").exists()


def test_the_demo_preset_trains_new_runs_with_offset_noise_and_old_runs_keep_theirs(tmp_path: Path) -> None:
    """The measured remedy is the demo preset's default; tiny (tests) and paper (the reference) stay plain, and
    a run whose config predates the option (the shipped demo run) resumes with none."""
    from engine.models.config import TrainConfig, get_preset
    from engine.models.run import read_run_config

    assert get_preset("demo").train.offset_noise == 0.1
    assert get_preset("tiny").train.offset_noise == 0.0 == get_preset("paper").train.offset_noise
    shipped = read_run_config(Path(__file__).resolve().parents[1] / "assets/demo_run")["train"]
    assert "offset_noise" not in shipped
    assert TrainConfig.from_dict(shipped).offset_noise == 0.0
