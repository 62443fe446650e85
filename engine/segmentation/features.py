"""Diffusion activations as pixel features (Baranchuk et al. 2022, ddpm-segmentation's protocol).

An image x0 in [-1,1] is noised to x_t with ONE seeded eps shared by every t and every image, all
requested timesteps go through the UNet in one batch, the UNet stops after the last requested decoder
block, and each block's output is returned at its NATIVE resolution (never upsampled here: the
pixel classifier upsamples after its first layer: engine/segmentation/pixel_classifier.py). Maps are ordered t-major, then block.
With `rgb_window` = k > 0 one more map follows them: the frame's own RGB values in each pixel's k×k window, at the
input resolution (fine detail the 2×-downsampled decoder blocks blur, e.g. thin instruments).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, UserError
from .feature_cache import FeatureCache, cache_dir_for
from ..models.run import Run
from ..validation import MAX_SEED, in_range, length, strict_from_dict

log = logging.getLogger(__name__)

FeatureMaps = list[torch.Tensor]  # one (C_k, h_k, w_k) tensor per (t, block), t-major


# ---- the default feature recipe: the ONE place that decides it (CLI `fit`, the ddpm method, pages) ----
#: ddpm-segmentation's timesteps (its configs: steps 50,150,250; Baranchuk et al., ICLR 2022).
DEFAULT_STEPS: tuple[int, ...] = (50, 150, 250)
#: ddpm-segmentation's decoder blocks for guided-diffusion's 18-block 256 px UNet.
REFERENCE_BLOCKS: tuple[int, ...] = (5, 6, 7, 8, 12)
REFERENCE_DEPTH = 18


def default_blocks(n_blocks: int) -> tuple[int, ...]:
    """The reference blocks 5,6,7,8,12 for an 18-block decoder; otherwise the blocks at the same relative depths."""
    if n_blocks < 1:
        raise ValueError(f"a model needs at least one decoder block, got {n_blocks}")
    if n_blocks == REFERENCE_DEPTH:
        return REFERENCE_BLOCKS
    last = REFERENCE_DEPTH - 1
    return tuple(sorted({min(n_blocks - 1, round(b * (n_blocks - 1) / last)) for b in REFERENCE_BLOCKS}))


MAX_RGB_WINDOW = 9  # 3·81 = 243 channels: more than the diffusion maps of a small recipe


def rgb_window_map(images: torch.Tensor, k: int) -> torch.Tensor:
    """(N,3,H,W) frames → (N, 3·k², H, W): every pixel's k×k window of RGB values (edges replicated), rounded to
    float16 like the diffusion maps. Channel c·k² + dy·k + dx holds channel c at offset (dy − k//2, dx − k//2)."""
    x = images.to(torch.float32)
    n, _, h, w = x.shape
    padded = F.pad(x, (k // 2,) * 4, mode="replicate")
    return F.unfold(padded, k).view(n, 3 * k * k, h, w).to(torch.float16).float()


@dataclass(frozen=True)
class FeatureSpec:
    """Which activations make the features: timesteps, decoder blocks, noise seed(s).

    `blocks=None` means "the model's default blocks" (`default_blocks`); it is resolved against a
    network by `for_model` (FeatureExtractor does so), so `FeatureSpec()` is valid for every preset.
    """

    steps: tuple[int, ...] = DEFAULT_STEPS
    blocks: tuple[int, ...] | None = None
    noise_seed: int = 0
    n_noise: int = 1  # >1: average activations over noise seeds noise_seed .. noise_seed+n_noise-1
    rgb_window: int = 0  # k > 0 (odd): append the frame's RGB in each pixel's k×k window (3·k² channels)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))
        if self.blocks is not None:
            object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if not self.steps or (self.blocks is not None and not self.blocks):
            raise ConfigError("a feature spec needs at least one timestep and one block")
        if len(set(self.steps)) != len(self.steps) or (self.blocks is not None
                                                        and len(set(self.blocks)) != len(self.blocks)):
            raise ConfigError(f"duplicate timesteps or blocks in {self.steps} / {self.blocks}")
        if self.n_noise < 1:
            raise ConfigError(f"n_noise must be >= 1, got {self.n_noise}")
        if not (self.rgb_window == 0 or (self.rgb_window % 2 == 1 and 1 <= self.rgb_window <= MAX_RGB_WINDOW)):
            raise ConfigError(f"rgb_window must be 0 (off) or an odd window side 1..{MAX_RGB_WINDOW}, "
                              f"got {self.rgb_window}")
        if not 0 <= self.noise_seed <= MAX_SEED - self.n_noise:
            raise ConfigError(f"noise_seed must be in 0..{MAX_SEED - self.n_noise} (2**32-1 minus n_noise), "
                              f"got {self.noise_seed}")

    def for_model(self, n_blocks: int) -> FeatureSpec:
        """This spec with `blocks=None` replaced by the default blocks of an `n_blocks`-block decoder."""
        return self if self.blocks is not None else replace(self, blocks=default_blocks(n_blocks))

    @property
    def block_list(self) -> tuple[int, ...]:
        """The decoder blocks (the spec must be resolved: see `for_model`)."""
        if self.blocks is None:
            raise ValueError("this feature spec uses the model's default blocks; resolve it with for_model() first")
        return self.blocks

    @property
    def keys(self) -> list[tuple[int, int]]:
        """(t, block) of every feature map, in feature order."""
        return [(t, b) for t in self.steps for b in self.block_list]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["steps"] = list(self.steps)
        d["blocks"] = None if self.blocks is None else list(self.blocks)
        return d

    @classmethod
    def from_dict(cls, d: Any, source: str = "config", section: str = "spec") -> "FeatureSpec":
        """Strict reader: wrong types, ranges, missing or unknown keys raise one ConfigError line."""
        return strict_from_dict(cls, d, source, section=section, checks={
            "steps": (length(1, 64), in_range(0, 100_000)), "blocks": (length(1, 64), in_range(0, 1000)),
            "noise_seed": in_range(0, MAX_SEED), "n_noise": in_range(1, 64),
            "rgb_window": in_range(0, MAX_RGB_WINDOW)}, optional={"rgb_window": 0})


def default_spec(run: Run) -> FeatureSpec:
    """The default feature recipe (timesteps and blocks) for a run's network: `FeatureSpec()` resolved."""
    return FeatureSpec().for_model(len(run.model.output_blocks))


def validate_spec(spec: FeatureSpec, run: Run) -> None:
    """Clear errors for timesteps outside 0..T-1 or blocks the model does not have."""
    T, n_blocks = run.diffusion.num_timesteps, len(run.model.output_blocks)
    bad_t = [t for t in spec.steps if not 0 <= t < T]
    if bad_t:
        raise UserError(f"timestep(s) {bad_t} out of range; valid timesteps are 0..{T - 1}")
    bad_b = [b for b in spec.for_model(n_blocks).block_list if not 0 <= b < n_blocks]
    if bad_b:
        raise UserError(f"unknown decoder block(s) {bad_b}; this model's valid blocks are 0..{n_blocks - 1}")


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
        spec = spec.for_model(len(run.model.output_blocks))
        validate_spec(spec, run)
        self.run, self.spec, self.cache = run, spec, cache
        self.device = next(run.model.parameters()).device

    def map_shapes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """(channels, h, w) of every feature map for an input of height×width."""
        m, k = self.run.model, self.spec.rgb_window
        shapes = [(m.output_channels[b], height // m.output_ds[b], width // m.output_ds[b]) for _, b in self.spec.keys]
        return shapes + ([(3 * k * k, height, width)] if k else [])

    @property
    def channels(self) -> list[int]:
        """Channels per feature map; their sum is the feature dimension D."""
        k = self.spec.rgb_window
        return [self.run.model.output_channels[b] for _, b in self.spec.keys] + ([3 * k * k] if k else [])

    def _with_window(self, maps: list[torch.Tensor], images: torch.Tensor) -> list[torch.Tensor]:
        """`maps` plus the RGB window map of `images` when the spec asks for one (never cached: it is cheap)."""
        k = self.spec.rgb_window
        if not k:
            return maps
        window = rgb_window_map(images if images.ndim == 4 else images[None], k).to(maps[0].device)
        return maps + [window if images.ndim == 4 else window[0]]

    def _key(self, image_hash: str, t: int, b: int, shape: tuple[int, ...]) -> str:
        s = self.spec
        return f"v1|{self.run.weights_hash}|{image_hash}|t{t}|b{b}|seed{s.noise_seed}|k{s.n_noise}|{shape[-2]}x{shape[-1]}"

    @torch.inference_mode()
    def _forward(self, images: torch.Tensor, autocast_bf16: bool = False) -> list[torch.Tensor]:
        """The one UNet computation of the maps: N images (N,3,H,W) × all timesteps in ONE forward per noise
        seed, averaged over the seeds → one float32 (N, C_k, h_k, w_k) tensor per (t, block), t-major, unrounded.

        Its float sums depend on the batch size N (the convolutions' blocking: about 0.02-0.2 % of float16
        values one step apart between N = 1 and N >= 2, measured on the demo), so everything that reaches the
        cache is computed with N = 1 (`__call__`, hence `many`); only video batches frames (nothing cached)."""
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
                feats = model.forward_features(xt, diff.model_t(t), s.block_list)
            for b, f in feats.items():
                acc[b] = acc[b] + f.float() if b in acc else f.float()
        return [(acc[b] / s.n_noise).reshape(n, n_t, *acc[b].shape[1:])[:, i]
                for i, _ in enumerate(s.steps) for b in s.block_list]

    def compute(self, image: torch.Tensor) -> FeatureMaps:
        """Maps of one (3,H,W) image, no cache, unrounded: the UNet at batch size one (as `__call__`)."""
        return self._with_window([m[0] for m in self._forward(image[None])], image)

    def compute_batch(self, images: torch.Tensor, autocast_bf16: bool = False) -> list[torch.Tensor]:
        """Maps of N images (N,3,H,W) from ONE UNet forward over all N × steps: one (N, C_k, h_k, w_k) tensor
        per map, rounded to float16 like `__call__`. N = 1 equals `__call__` bit for bit; a larger batch
        rounds a few values differently (`_forward`), which is why nothing batched is cached."""
        maps = self._forward(images, autocast_bf16)
        return self._with_window([f.to(torch.float16).float().contiguous() for f in maps], images)

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
            hits = [torch.from_numpy(c.astype(np.float32)).to(self.device) for c in cached if c is not None]
            return self._with_window(hits, image)
        maps = self.compute(image)
        for k, f in zip(keys, maps):  # the RGB window map (last, if any) has no key: it is not cached
            self.cache.set(k, f.to(torch.float16).cpu().numpy())
        return [f.to(torch.float16).float() for f in maps]  # same precision as a cache hit

    def cached_many(self, images: torch.Tensor) -> list[torch.Tensor] | None:
        """Stacked float16 maps (N, C_k, h_k, w_k) of N images when every map of every image is in the cache,
        else None (nothing is computed: the caller decides what to run)."""
        if self.cache is None:
            return None
        expected = self.map_shapes(images.shape[2], images.shape[3])[:len(self.spec.keys)]
        out = [torch.empty((len(images), *shp), dtype=torch.float16) for shp in expected]
        for i, img in enumerate(images):
            ih = tensor_hash(img)
            for j, ((t, b), shp) in enumerate(zip(self.spec.keys, expected)):
                c = self.cache.get(self._key(ih, t, b, tuple(img.shape)))
                if c is None or tuple(c.shape) != shp:
                    return None
                out[j][i] = torch.from_numpy(np.asarray(c, dtype=np.float16))
        return [m.to(torch.float16) for m in self._with_window(out, images)]

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
    """The run's feature cache: CACHE_ROOT/<weights hash>, where the root is `cache_dir` (--cache-dir), else
    $DIFFSEG_CACHE_DIR, else the per-user cache directory (engine.segmentation.feature_cache.cache_root)."""
    return FeatureCache(cache_dir_for(run.weights_hash, cache_dir))
