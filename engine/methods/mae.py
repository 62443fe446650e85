"""`mae`: a small masked autoencoder (He et al. 2022) pretrained on the unlabelled pool.

ViT encoder over p×p patches with learned position embeddings; 75 % of patches masked at random per
image, the encoder sees only the visible ones, a light decoder (mask tokens + positions) predicts the
pixels of every patch and the loss is the MSE on the masked patches (per-patch normalised targets).
For segmentation the encoder runs on all patches and the tokens of several layers are reshaped to
(D, S/p, S/p) maps → the shared factorised pixel head (engine/methods/head.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .base import MethodContext, batch_indices, flip_shift, seeded
from .head import BackboneHeadMethod, HeadConfig


def _block(dim: int, heads: int) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout=0.0, activation="gelu", batch_first=True,
                                      norm_first=True)


class MAE(nn.Module):
    """Encoder (depth × dim) + decoder (dec_depth × dec_dim) over patch tokens."""

    def __init__(self, image_size: int, patch: int, dim: int, depth: int, heads: int, dec_dim: int, dec_depth: int):
        super().__init__()
        if image_size % patch:
            raise ConfigError(f"mae: image size {image_size} is not a multiple of the patch size {patch}")
        self.patch, self.grid = patch, image_size // patch
        n = self.grid ** 2
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, n, dim) * 0.02)
        self.blocks = nn.ModuleList([_block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.dec_embed = nn.Linear(dim, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        self.dec_pos = nn.Parameter(torch.randn(1, n, dec_dim) * 0.02)
        self.dec_blocks = nn.ModuleList([_block(dec_dim, heads) for _ in range(dec_depth)])
        self.dec_norm = nn.LayerNorm(dec_dim)
        self.dec_out = nn.Linear(dec_dim, patch * patch * 3)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x).flatten(2).transpose(1, 2) + self.pos  # (N, L, D)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.patch
        return x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(n, (h // p) * (w // p), p * p * c)

    def loss(self, x: torch.Tensor, mask_ratio: float, g: torch.Generator) -> torch.Tensor:
        tok = self.tokens(x)
        n, L, D = tok.shape
        keep = max(1, int(round(L * (1 - mask_ratio))))
        order = torch.rand(n, L, generator=g).argsort(dim=1).to(x.device)
        vis_idx = order[:, :keep]
        h = torch.gather(tok, 1, vis_idx[..., None].expand(-1, -1, D))
        for blk in self.blocks:
            h = blk(h)
        h = self.dec_embed(self.norm(h))
        full = self.mask_token.expand(n, L, -1).clone()
        full.scatter_(1, vis_idx[..., None].expand(-1, -1, h.shape[-1]), h)
        full = full + self.dec_pos
        for blk in self.dec_blocks:
            full = blk(full)
        pred = self.dec_out(self.dec_norm(full))
        target = self.patchify(x)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        masked = torch.ones(n, L, device=x.device)
        masked.scatter_(1, vis_idx, 0.0)
        per_patch = ((pred - target) ** 2).mean(-1)
        return (per_patch * masked).sum() / masked.sum()

    def map_channels(self, layers: list[int]) -> list[int]:
        """Channels of each map `feature_maps(x, layers)` returns: the token width per layer."""
        return [self.embed.out_channels for _ in layers]

    def feature_maps(self, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """Unmasked encoder tokens after the given layers (0-based) as (N, D, S/p, S/p) maps."""
        h = self.tokens(x)
        out = []
        for i, blk in enumerate(self.blocks):
            h = blk(h)
            if i in layers:
                out.append(h.transpose(1, 2).reshape(x.shape[0], -1, self.grid, self.grid))
        return out


@dataclass
class MAEConfig(HeadConfig):
    """MAE backbone (ViT over patch×patch tokens) + its pretraining, then the shared pixel head."""

    patch: int = 4
    dim: int = 96
    depth: int = 4
    heads: int = 4
    dec_dim: int = 64
    dec_depth: int = 1
    mask_ratio: float = 0.75
    lr: float = 1.5e-3
    batch_size: int = 16
    feature_layers: tuple[int, ...] = (1, 2, 3)
    steps: int = 200

    @classmethod
    def tiny(cls) -> MAEConfig:
        return cls.budgeted("tiny", dim=16, depth=2, heads=2, dec_dim=16, feature_layers=(0, 1), steps=2, batch_size=2)

    @classmethod
    def quick(cls) -> MAEConfig:
        return cls.budgeted("quick", batch_size=8, steps=200)

    @classmethod
    def full(cls) -> MAEConfig:
        return cls.budgeted("full", dim=192, depth=8, heads=6, dec_dim=128, dec_depth=2, feature_layers=(3, 5, 7),
                            steps=20000, batch_size=32)


class MAEMethod(BackboneHeadMethod):
    name = "mae"
    title = "Masked-autoencoder (ViT) features"
    config_class = MAEConfig
    cfg: MAEConfig

    def __init__(self, config: MAEConfig | dict[str, Any], ctx: MethodContext):
        super().__init__(config, ctx)
        c = self.cfg
        torch.manual_seed(c.seed)
        self.layers = [int(v) % c.depth for v in c.feature_layers]
        self._build(MAE(ctx.image_size, c.patch, c.dim, c.depth, c.heads, c.dec_dim, c.dec_depth))

    def map_channels(self) -> list[int]:
        net: MAE = self.net  # type: ignore[assignment]
        return net.map_channels(self.layers)

    def _maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        net: MAE = self.net  # type: ignore[assignment]
        return net.feature_maps(x.float().to(self.device), self.layers)

    def fit(self, pool: torch.Tensor, images: torch.Tensor, masks: torch.Tensor,
            out_dir: str | Path | None = None) -> dict[str, Any]:
        c, g = self.cfg, seeded(self.cfg.seed)
        net: MAE = self.net  # type: ignore[assignment]
        opt = torch.optim.AdamW(net.parameters(), lr=c.lr, betas=(0.9, 0.95), weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, c.lr, total_steps=max(c.steps, 2), pct_start=0.1)
        t0, hist = time.time(), []
        net.train()
        for step in range(c.steps):
            x, _ = flip_shift(pool[batch_indices(len(pool), c.batch_size, g)], None, g, 0)
            loss = net.loss(x.to(self.device), c.mask_ratio, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % 25 == 0 or step == c.steps - 1:
                hist.append([step, loss.item()])
        return self._fit_head(hist, t0, pool, images, masks)


METHOD = MAEMethod
