"""Shared test helpers: a tiny folder data set, free ports, running the CLI as a subprocess."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

CLASSES = {"classes": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                       {"id": 1, "name": "disc", "color": [255, 0, 0]}]}


def write_tiny_dataset(root: Path, n: int = 8, size: int = 32, seed: int = 0, n_masks: int = 2) -> Path:
    """A folder data set of `n` size×size RGB frames (a coloured disc on a gradient), `n_masks` of them labelled."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    for i in range(n):
        cy, cx, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.15, 0.3)]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        img = np.stack([xx, yy, 1 - xx], -1) * rng.uniform(0.4, 1.0, 3)
        img[disc] = rng.uniform(0, 1, 3)
        img = (np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1) * 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"f{i:03d}.png")
        if i < n_masks:
            Image.fromarray(disc.astype(np.uint8)).save(root / "masks" / f"f{i:03d}.png")
    (root / "classes.json").write_text(json.dumps(CLASSES))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for engine subprocesses: repo importable, one thread each (2 shared cores)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def engine_cmd(*args: str) -> list[str]:
    return [PYTHON, "-m", "engine", *map(str, args)]


def run_engine(*args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m engine ARGS` and capture its output (never raises on a non-zero exit)."""
    return subprocess.run(engine_cmd(*args), cwd=REPO, env=subprocess_env(**env), capture_output=True,
                          text=True, timeout=timeout)


def read_loss_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "loss.jsonl").read_text().splitlines() if line.strip()]
