"""Sample generation pipeline: run + sampler → PNG files and a grid (used by CLI and dashboard)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..data.images import save_png_atomic
from . import make_sampler
from .samplers import DEFAULT_SAMPLER, to_uint8
from ..errors import UserError
from ..memory import check_memory
from ..models.run import Run, load_run
from ..training.grid import save_image_grid


def sample_images(run: Run, n: int, sampler: str = DEFAULT_SAMPLER, steps: int = 50, seed: int = 0, eta: float = 0.0,
                  batch_size: int = 16, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(n, S, S, 3) uint8 samples; batches are seeded by (seed, batch index) so n does not change earlier ones."""
    if n < 1:
        raise UserError(f"number of samples must be >= 1, got {n}")
    size = run.image_size
    check_memory(2 * n * size * size * 3 + batch_size * 3 * size * size * 4 * 8,
                 f"sample (--n {n} at {size} px, --batch-size {batch_size})", "lower --n or --batch-size")
    s = make_sampler(sampler, run.diffusion, steps, eta)
    device = run.device
    size, out = run.image_size, []
    n_batches = -(-n // batch_size)
    for b in range(n_batches):
        m = min(batch_size, n - b * batch_size)
        g = torch.Generator().manual_seed(seed * 100_003 + b)

        def report(done: int, total: int, b: int = b) -> None:
            if progress:
                progress(b * total + done, n_batches * total)

        out.append(to_uint8(s.sample(run.model, (m, 3, size, size), g, device, report)))
    return np.concatenate(out)


def generate_samples(run_path: str | Path, n: int, sampler: str, steps: int, seed: int, out: Path,
                     eta: float = 0.0, batch_size: int = 16, *, device: str | torch.device) -> list[Path]:
    """Write sample_XXXX.png files and grid.png into `out`; returns their paths (grid last)."""
    run = load_run(run_path, device)
    images = sample_images(run, n, sampler, steps, seed, eta, batch_size)
    out.mkdir(parents=True, exist_ok=True)
    paths = [save_png_atomic(out / f"sample_{i:04d}.png", img) for i, img in enumerate(images)]
    paths.append(save_image_grid(images, out / "grid.png"))
    return paths


def time_denoiser_step(run: Run, batch: int, repeats: int = 2) -> float:
    """Seconds for one denoising step of `batch` images (median of `repeats` forward passes, after a warm-up)."""
    import statistics
    import time

    device = next(run.model.parameters()).device
    x = torch.zeros(batch, 3, run.image_size, run.image_size, device=device)
    t = torch.full((batch,), run.diffusion.num_timesteps // 2, device=device, dtype=torch.long)
    times = []
    with torch.inference_mode():
        run.model(x, run.diffusion.model_t(t))
        for _ in range(repeats):
            t0 = time.perf_counter()
            run.model(x, run.diffusion.model_t(t))
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def estimate_sampling_seconds(step_seconds: float, n: int, steps: int, batch_size: int) -> float:
    """Expected wall time of sample_images: batches × sampling steps × one step of a full batch."""
    if n < 1 or steps < 1 or batch_size < 1:
        raise UserError(f"n, steps and batch_size must be >= 1, got {n}, {steps}, {batch_size}")
    return -(-n // batch_size) * steps * step_seconds
