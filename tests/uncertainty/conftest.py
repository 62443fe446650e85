"""Fixtures for the uncertainty tests: a random-init tiny run with a tiny pool, and the issue's example photo."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from uncertainty_helpers import gradient_shapes_photo

from engine.models.config import get_preset
from engine.models.unet import UNetModel
from engine.models.run import EMA_FILE, write_run_config


@pytest.fixture(scope="session")
def unc_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run of a randomly initialised UNet (every layer non-zero)."""
    out = tmp_path_factory.mktemp("unc_run") / "run"
    p = get_preset("tiny")
    torch.manual_seed(0)
    model = UNetModel(p.unet)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for prm in model.parameters():
            if not prm.any():
                prm.copy_(torch.randn(prm.shape, generator=g) * 0.05)
    out.mkdir(parents=True)
    torch.save(model.state_dict(), out / EMA_FILE)
    write_run_config(out, {"preset": "tiny", "unet": p.unet.to_dict(), "diffusion": p.diffusion.to_dict(), "step": 0})
    return out


@pytest.fixture(scope="session")
def unc_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic cataract frames at 64 px: 24 unlabelled (the pool), 4 train, 3 test."""
    from engine.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("unc_synth") / "data", size=64, seed=0, n_unlabelled=24,
                                   n_train=4, n_test=3)


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    return gradient_shapes_photo(tmp_path / "gradient_shapes.jpg")
