"""`swav`: a small ConvNet trained with SwAV (Caron et al. 2020) on the unlabelled pool.

Multi-crop: 2 global crops (side S) + `n_small` local crops (side S/2), each a random resized crop with
flips and brightness/contrast jitter. Every crop → backbone → global pool → projection MLP → unit
vector z; scores z·c against `prototypes` unit vectors. Codes q for the global crops come from
Sinkhorn-Knopp (ε = 0.05, 3 iterations, equal partition over the batch); swapped prediction: each
global crop's code is predicted from every other crop's softmax(scores / τ). Prototypes are
re-normalised after every step. For segmentation the three stage outputs (1/2, 1/4, 1/8 of S) are the
multi-scale maps fed to the shared pixel head.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import MethodContext, batch_indices, seeded
from .head import BackboneHeadMethod, HeadConfig


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SwAVNet(nn.Module):
    def __init__(self, width: int, proj_dim: int, n_prototypes: int):
        super().__init__()
        self.stages = nn.ModuleList([_stage(3, width), _stage(width, 2 * width), _stage(2 * width, 4 * width)])
        self.proj = nn.Sequential(nn.Linear(4 * width, 4 * width), nn.BatchNorm1d(4 * width), nn.ReLU(inplace=True),
                                  nn.Linear(4 * width, proj_dim))
        self.prototypes = nn.Linear(proj_dim, n_prototypes, bias=False)

    def map_channels(self) -> list[int]:
        """Channels of each stage map `feature_maps` returns (each stage's last convolution)."""
        return [[m for m in stage.modules() if isinstance(m, nn.Conv2d)][-1].out_channels for stage in self.stages]

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], x
        for s in self.stages:
            h = s(h)
            out.append(h)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.proj(self.feature_maps(x)[-1].mean(dim=(2, 3))), dim=1)
        return self.prototypes(z)

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, eps: float = 0.05, iters: int = 3) -> torch.Tensor:
    """(B, K) scores → (B, K) soft codes with equal mass per prototype across the batch (rows sum to 1)."""
    q = torch.exp((scores - scores.max()) / eps).t()  # (K, B)
    q /= q.sum()
    k, b = q.shape
    for _ in range(iters):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).t()


def random_crops(x: torch.Tensor, size: int, scale: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """Random resized crops (area fraction in `scale`, aspect 3/4..4/3) with flips and colour jitter."""
    n, device = x.shape[0], x.device
    area = torch.empty(n).uniform_(*scale, generator=g)
    logr = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)
    sx = (area * logr.exp()).sqrt().clamp(max=1.0)
    sy = (area / logr.exp()).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, generator=g) * 2 - 1) * (1 - sx)
    cy = (torch.rand(n, generator=g) * 2 - 1) * (1 - sy)
    fx = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    fy = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx * fx, cx, sy * fy, cy
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False).to(device)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    bright = torch.empty(n, 1, 1, 1).uniform_(-0.2, 0.2, generator=g).to(device)
    contrast = torch.empty(n, 1, 1, 1).uniform_(0.7, 1.3, generator=g).to(device)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * contrast + mean + bright).clamp(-1, 1)


def swav_loss(net: SwAVNet, crops: list[torch.Tensor], temperature: float, eps: float) -> torch.Tensor:
    scores = [net(c) for c in crops]
    loss, terms = scores[0].new_zeros(()), 0
    for i in (0, 1):  # codes from the global crops
        q = sinkhorn(scores[i].detach(), eps)
        for v, s in enumerate(scores):
            if v != i:
                loss = loss - (q * F.log_softmax(s / temperature, dim=1)).sum(dim=1).mean()
                terms += 1
    return loss / terms


@dataclass
class SwAVConfig(HeadConfig):
    """SwAV ConvNet (3 stages of `width`, 2·width, 4·width channels) + its pretraining, then the pixel head."""

    width: int = 32
    proj_dim: int = 64
    prototypes: int = 32
    n_small: int = 4
    temperature: float = 0.1
    sinkhorn_eps: float = 0.05
    lr: float = 2e-3
    batch_size: int = 16
    steps: int = 150

    @classmethod
    def tiny(cls) -> SwAVConfig:
        return cls.budgeted("tiny", width=8, proj_dim=16, prototypes=8, n_small=2, steps=2, batch_size=4)

    @classmethod
    def quick(cls) -> SwAVConfig:
        return cls.budgeted("quick", width=16, n_small=2, batch_size=8, steps=150)

    @classmethod
    def full(cls) -> SwAVConfig:
        return cls.budgeted("full", width=64, proj_dim=128, prototypes=100, n_small=6, steps=20000, batch_size=64)


class SwAVMethod(BackboneHeadMethod):
    name = "swav"
    title = "SwAV (self-supervised CNN) features"
    config_class = SwAVConfig
    cfg: SwAVConfig

    def __init__(self, config: SwAVConfig | dict[str, Any], ctx: MethodContext):
        super().__init__(config, ctx)
        c = self.cfg
        torch.manual_seed(c.seed)
        net = SwAVNet(c.width, c.proj_dim, c.prototypes)
        net.normalize_prototypes()
        self._build(net)

    def map_channels(self) -> list[int]:
        net: SwAVNet = self.net  # type: ignore[assignment]
        return net.map_channels()

    def _maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        net: SwAVNet = self.net  # type: ignore[assignment]
        return net.feature_maps(x.float().to(self.device))

    def fit(self, pool: torch.Tensor, images: torch.Tensor, masks: torch.Tensor,
            out_dir: str | Path | None = None) -> dict[str, Any]:
        c, g = self.cfg, seeded(self.cfg.seed)
        net: SwAVNet = self.net  # type: ignore[assignment]
        S = self.ctx.image_size
        opt = torch.optim.AdamW(net.parameters(), lr=c.lr, weight_decay=1e-4)
        t0, hist = time.time(), []
        net.train()
        for step in range(c.steps):
            x = pool[batch_indices(len(pool), c.batch_size, g)].float().to(self.device)
            crops = [random_crops(x, S, (0.35, 1.0), g) for _ in range(2)]
            crops += [random_crops(x, max(8, S // 2), (0.08, 0.35), g) for _ in range(c.n_small)]
            loss = swav_loss(net, crops, c.temperature, c.sinkhorn_eps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            net.normalize_prototypes()
            if step % 25 == 0 or step == c.steps - 1:
                hist.append([step, loss.item()])
        return self._fit_head(hist, t0, pool, images, masks)


METHOD = SwAVMethod
