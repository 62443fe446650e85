"""Diffusion activations as pixel features (Baranchuk et al. 2022, ddpm-segmentation's protocol).

An image x0 in [-1,1] is noised to x_t with ONE seeded eps shared by every t and every image, all
requested timesteps go through the UNet in one batch, the UNet stops after the last requested decoder
block, and each block's output is returned at its NATIVE resolution (never upsampled here: the
pixel classifier upsamples after its first layer, design.md §4). Maps are ordered t-major, then block.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .feature_cache import FeatureCache
from .run import Run

log = logging.getLogger(__name__)

FeatureMaps = list[torch.Tensor]  # one (C_k, h_k, w_k) tensor per (t, block), t-major


@dataclass(frozen=True)
class FeatureSpec:
    """Which activations make the features: timesteps, decoder blocks, noise seed(s)."""

    steps: tuple[int, ...] = (50, 150, 250)
    blocks: tuple[int, ...] = (5, 6, 7, 8, 12)
    noise_seed: int = 0
    n_noise: int = 1  # >1: average activations over noise seeds noise_seed .. noise_seed+n_noise-1

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if not self.steps or not self.blocks:
            raise ValueError("a feature spec needs at least one timestep and one block")
        if len(set(self.steps)) != len(self.steps) or len(set(self.blocks)) != len(self.blocks):
            raise ValueError(f"duplicate timesteps or blocks in {self.steps} / {self.blocks}")
        if self.n_noise < 1:
            raise ValueError(f"n_noise must be >= 1, got {self.n_noise}")

    @property
    def keys(self) -> list[tuple[int, int]]:
        """(t, block) of every feature map, in feature order."""
        return [(t, b) for t in self.steps for b in self.blocks]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["steps"], d["blocks"] = list(self.steps), list(self.blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureSpec":
        return cls(**d)


def validate_spec(spec: FeatureSpec, run: Run) -> None:
    """Clear errors for timesteps outside 0..T-1 or blocks the model does not have."""
    T, n_blocks = run.diffusion.num_timesteps, len(run.model.output_blocks)
    bad_t = [t for t in spec.steps if not 0 <= t < T]
    if bad_t:
        raise ValueError(f"timestep(s) {bad_t} out of range; valid timesteps are 0..{T - 1}")
    bad_b = [b for b in spec.blocks if not 0 <= b < n_blocks]
    if bad_b:
        raise ValueError(f"unknown decoder block(s) {bad_b}; this model's valid blocks are 0..{n_blocks - 1}")


def shared_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The one eps of a given image shape for a seed (the same for every t and every image)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def tensor_hash(x: torch.Tensor) -> str:
    """Content hash of a tensor's values and shape (keys the cache on what the model actually sees)."""
    arr = x.detach().to(torch.float32).contiguous().cpu().numpy()
    h = hashlib.sha256(str(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()[:32]


class FeatureExtractor:
    """Native-resolution activations for a run and a spec, cached on disk as float16."""

    def __init__(self, run: Run, spec: FeatureSpec, cache: FeatureCache | None = None):
        validate_spec(spec, run)
        self.run, self.spec, self.cache = run, spec, cache
        self.device = next(run.model.parameters()).device

    def map_shapes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """(channels, h, w) of every feature map for an input of height×width."""
        m = self.run.model
        return [(m.output_channels[b], height // m.output_ds[b], width // m.output_ds[b]) for _, b in self.spec.keys]

    @property
    def channels(self) -> list[int]:
        """Channels per feature map; their sum is the feature dimension D."""
        return [self.run.model.output_channels[b] for _, b in self.spec.keys]

    def _key(self, image_hash: str, t: int, b: int, shape: tuple[int, ...]) -> str:
        s = self.spec
        return f"v1|{self.run.weights_hash}|{image_hash}|t{t}|b{b}|seed{s.noise_seed}|k{s.n_noise}|{shape[-2]}x{shape[-1]}"

    @torch.inference_mode()
    def compute(self, image: torch.Tensor) -> FeatureMaps:
        """Run the UNet (no cache): all timesteps in one batch, averaged over n_noise seeds."""
        s, model, diff = self.spec, self.run.model, self.run.diffusion
        x0 = image.to(self.device, torch.float32)[None].expand(len(s.steps), -1, -1, -1)
        t = torch.tensor(s.steps, device=self.device)
        acc: dict[int, torch.Tensor] = {}
        for k in range(s.n_noise):
            eps = shared_noise(s.noise_seed + k, tuple(image.shape)).to(self.device)[None].expand_as(x0)
            xt = diff.q_sample(x0, t, eps)
            feats = model.forward_features(xt, diff.model_t(t), s.blocks)
            for b, f in feats.items():
                acc[b] = acc[b] + f.float() if b in acc else f.float()
        return [acc[b][i] / s.n_noise for i, _ in enumerate(s.steps) for b in s.blocks]

    @torch.inference_mode()
    def compute_batch(self, images: torch.Tensor, autocast_bf16: bool = False) -> list[torch.Tensor]:
        """Maps of N images (N,3,H,W) from ONE UNet forward over all N × steps: one (N, C_k, h_k, w_k) tensor
        per map, rounded to float16 like `__call__` (results never depend on batching or the cache)."""
        s, model, diff = self.spec, self.run.model, self.run.diffusion
        n, n_t = images.shape[0], len(s.steps)
        x0 = images.to(self.device, torch.float32).repeat_interleave(n_t, dim=0)  # image-major, then t
        t = torch.tensor(s.steps, device=self.device).repeat(n)
        if next(model.parameters()).is_contiguous(memory_format=torch.channels_last):
            x0 = x0.contiguous(memory_format=torch.channels_last)
        acc: dict[int, torch.Tensor] = {}
        for k in range(s.n_noise):
            eps = shared_noise(s.noise_seed + k, tuple(images.shape[1:])).to(self.device)[None].expand_as(x0)
            xt = diff.q_sample(x0, t, eps)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
                feats = model.forward_features(xt, diff.model_t(t), s.blocks)
            for b, f in feats.items():
                acc[b] = acc[b] + f.float() if b in acc else f.float()
        out = []
        for i, _ in enumerate(s.steps):
            for b in s.blocks:
                f = acc[b] / s.n_noise
                f = f.reshape(n, n_t, *f.shape[1:])[:, i]
                out.append(f.to(torch.float16).float().contiguous())
        return out

    def __call__(self, image: torch.Tensor) -> FeatureMaps:
        """Feature maps of one (3,H,W) image in [-1,1], from the cache when possible."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) image tensor, got {tuple(image.shape)}")
        if self.cache is None:  # same fp16 rounding as the cached path: results never depend on the cache
            return [f.to(torch.float16).float() for f in self.compute(image)]
        ih = tensor_hash(image)
        keys = [self._key(ih, t, b, tuple(image.shape)) for t, b in self.spec.keys]
        cached = [self.cache.get(k) for k in keys]
        expected = self.map_shapes(image.shape[1], image.shape[2])
        if all(c is not None and tuple(c.shape) == shp for c, shp in zip(cached, expected)):
            return [torch.from_numpy(c.astype(np.float32)).to(self.device) for c in cached]
        maps = self.compute(image)
        for k, f in zip(keys, maps):
            self.cache.set(k, f.to(torch.float16).cpu().numpy())
        return [f.to(torch.float16).float() for f in maps]  # same precision as a cache hit

    def many(self, images: torch.Tensor, progress: Any = None, dtype: torch.dtype = torch.float16) -> list[torch.Tensor]:
        """Stack maps of N images: one (N, C_k, h_k, w_k) tensor per map, stored in `dtype` to bound memory."""
        out: list[torch.Tensor] | None = None
        for i, img in enumerate(images):
            maps = self(img)
            if out is None:
                out = [torch.empty((len(images), *m.shape), dtype=dtype) for m in maps]
            for dst, m in zip(out, maps):
                dst[i] = m.cpu().to(dtype)
            if progress:
                progress(i + 1, len(images))
        assert out is not None, "no images"
        return out


def default_cache(run: Run, cache_dir: str | Path | None = None) -> FeatureCache:
    """The run's feature cache: `cache_dir`, else $DIFFSEG_CACHE_DIR, else RUN/feature_cache (next to weights)."""
    import os

    if cache_dir is None:
        env = os.environ.get("DIFFSEG_CACHE_DIR")
        if env:
            cache_dir = Path(env) / run.weights_hash[:16]
        else:
            base = run.path if run.path.is_dir() else run.path.parent
            cache_dir = base / "feature_cache"
    return FeatureCache(cache_dir)
