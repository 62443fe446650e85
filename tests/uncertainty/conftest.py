"""Fixtures for the uncertainty tests: a random-init tiny run with a tiny pool, and the issue's example photo."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.models.config import get_preset
from engine.models.unet import UNetModel
from engine.run import EMA_FILE, write_run_config


def gradient_shapes_photo(path: Path) -> Path:
    """The issue's 640×480 JPEG: a colour gradient, a beige disc with a brown centre, a green rectangle, a yellow
    triangle and a grey line (drawn here independently of the engine's unfamiliar-input set)."""
    from PIL import ImageDraw

    w, h = 640, 480
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([255 * xx / w, 180 * yy / h + 40, 255 - 200 * xx / w], -1).astype(np.uint8)
    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    d.ellipse([120, 140, 320, 340], fill=(230, 210, 175))
    d.ellipse([190, 210, 250, 270], fill=(105, 65, 35))
    d.rectangle([420, 60, 590, 190], fill=(50, 150, 60))
    d.polygon([(430, 420), (600, 420), (515, 270)], fill=(245, 215, 50))
    d.line([(30, 450), (400, 30)], fill=(128, 128, 128), width=6)
    im.save(path, quality=90)
    return path


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
