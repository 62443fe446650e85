"""Fixtures for the segmentation tests: a random-init tiny run (written once), synthetic labelled frames."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.models.config import get_preset
from engine.models.unet import UNetModel
from engine.models.run import EMA_FILE, Run, load_run, write_run_config


def make_run_dir(out: Path, seed: int = 0, preset: str = "tiny") -> Path:
    """A run directory of a randomly initialised UNet. Zero-initialised layers get small random weights too,
    so every block (and the timestep embedding) actually shapes the activations."""
    p = get_preset(preset)
    torch.manual_seed(seed)
    model = UNetModel(p.unet)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for prm in model.parameters():
            if not prm.any():
                prm.copy_(torch.randn(prm.shape, generator=g) * 0.05)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / EMA_FILE)
    write_run_config(out, {"preset": preset, "unet": p.unet.to_dict(), "diffusion": p.diffusion.to_dict(),
                           "step": 0})
    return out


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("tiny_run") / "run", seed=0)


@pytest.fixture(scope="session")
def other_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture, different weights (so a different content hash)."""
    return make_run_dir(tmp_path_factory.mktemp("other_run") / "run", seed=1)


@pytest.fixture()
def tiny_run(tiny_run_dir: Path) -> Run:
    return load_run(tiny_run_dir, "cpu")


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic labelled set: 64 px, 4 train + 3 test frames, the study's 5 classes."""
    from engine.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "data", size=64, seed=0, n_unlabelled=0,
                                   n_train=4, n_test=3)


class CallCounter:
    """Counts calls of a module via a forward pre-hook."""

    def __init__(self, module: torch.nn.Module):
        self.n = 0
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.n += 1

    def remove(self) -> None:
        self.handle.remove()


@pytest.fixture()
def count_calls():
    counters: list[CallCounter] = []

    def make(module: torch.nn.Module) -> CallCounter:
        c = CallCounter(module)
        counters.append(c)
        return c

    yield make
    for c in counters:
        c.remove()
