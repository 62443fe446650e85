"""Fixtures for the video tests: a tiny fitted classifier and small clips made with PyAV."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.video.writer import Mp4Writer


def make_run_dir(out: Path, seed: int = 0) -> Path:
    """A random-init tiny UNet run (zero-initialised layers get small random weights, so every block matters)."""
    import torch

    from engine.models.config import get_preset
    from engine.models.unet import UNetModel
    from engine.models.run import EMA_FILE, write_run_config

    p = get_preset("tiny")
    torch.manual_seed(seed)
    model = UNetModel(p.unet)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for prm in model.parameters():
            if not prm.any():
                prm.copy_(torch.randn(prm.shape, generator=g) * 0.05)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / EMA_FILE)
    write_run_config(out, {"preset": "tiny", "unet": p.unet.to_dict(), "diffusion": p.diffusion.to_dict(), "step": 0})
    return out


@pytest.fixture(scope="session")
def tiny_clf_dir(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A classifier fitted on the tiny data set's labelled frames (2 members, tiny UNet): seconds."""
    from engine.segmentation.classifier import fit_classifier
    from engine.segmentation.classifier_training import FitConfig
    from engine.data.folder import FolderDataset
    from engine.segmentation.features import FeatureSpec
    from engine.models.run import load_run

    root = tmp_path_factory.mktemp("video_clf")
    run = load_run(make_run_dir(root / "run"), "cpu")
    clf = fit_classifier(run, FolderDataset(tiny_data), FeatureSpec((30, 250), (0, 1, 3)),
                         FitConfig(members=3, max_epochs=2, batch_size=256))
    return clf.save(root / "clf")


def disc_frames(n: int, w: int = 48, h: int = 40, seed: int = 0) -> list[np.ndarray]:
    """n frames of a coloured disc moving over a gradient (what the tiny classifier was fitted on)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(n):
        cx, cy = w * (0.3 + 0.4 * i / max(n - 1, 1)), h * 0.5
        img = np.stack([xx / w, yy / h, 1 - xx / w], -1) * 0.8
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < (h * 0.25) ** 2] = (0.9, 0.2, 0.1)
        img = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
        frames.append((img * 255).astype(np.uint8))
    return frames


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    w = Mp4Writer(path, frames[0].shape[1], frames[0].shape[0], fps, crf=12)
    for f in frames:
        w.write(f)
    return w.close()


@pytest.fixture(scope="session")
def disc_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 13-frame 48×40 H.264 clip."""
    return write_clip(tmp_path_factory.mktemp("clips") / "disc.mp4", disc_frames(13))
