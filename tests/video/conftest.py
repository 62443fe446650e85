"""Fixtures for the video tests: a tiny fitted classifier and small clips made with PyAV."""
from __future__ import annotations

from pathlib import Path

import pytest

from video_clips import disc_frames, write_clip


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


@pytest.fixture(scope="session")
def disc_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 13-frame 48×40 H.264 clip."""
    return write_clip(tmp_path_factory.mktemp("clips") / "disc.mp4", disc_frames(13))
