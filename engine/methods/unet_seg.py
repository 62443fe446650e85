"""`unet`: a UNet trained from scratch on the labelled frames only (the study's weakest baseline).

The network is our guided-diffusion UNetModel with in_channels 3, out_channels C and a constant t = 0
(so no new architecture code). Augmentation: random horizontal/vertical flips and integer shifts of
up to `max_shift` pixels (mask edges uncovered by a shift are ignored). Loss: pixel cross-entropy
(IGNORE_INDEX ignored), AdamW. It is the reference baseline the compare table reports Δ against.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..data.classes import IGNORE_INDEX
from ..models.config import UNetConfig
from ..models.unet import UNetModel
from .base import Method, MethodConfig, MethodContext, MethodOutput, batch_indices, flip_shift, seeded


@dataclass
class UNetSegConfig(MethodConfig):
    """A segmentation UNet (channels × channel_mult, res_blocks per level) and its supervised training."""

    legacy_keys: ClassVar[frozenset[str]] = frozenset({"augment"})  # written by older versions, never read

    channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    res_blocks: int = 1
    lr: float = 1e-3
    batch_size: int = 8
    max_shift: int = 4
    steps: int = 150
    seed: int = 0

    @classmethod
    def tiny(cls) -> UNetSegConfig:
        return cls(channel_mult=(1, 1), steps=3, batch_size=2, max_shift=2)

    @classmethod
    def quick(cls) -> UNetSegConfig:
        return cls(batch_size=4, steps=150)

    @classmethod
    def full(cls) -> UNetSegConfig:
        return cls(channels=64, channel_mult=(1, 2, 2, 4), res_blocks=2, steps=4000)


def seg_unet(cfg: UNetSegConfig, ctx: MethodContext) -> UNetModel:
    return UNetModel(UNetConfig(image_size=ctx.image_size, in_channels=3, out_channels=ctx.num_classes,
                                model_channels=cfg.channels, channel_mult=tuple(cfg.channel_mult),
                                num_res_blocks=cfg.res_blocks, attention_ds=(), num_head_channels=32))


def train_seg_unet(net: UNetModel, images: torch.Tensor, masks: torch.Tensor, cfg: UNetSegConfig) -> dict[str, Any]:
    """Cross-entropy training with flips + shifts on the network's device; returns stats (loss history, seconds)."""
    g = seeded(cfg.seed)
    device = next(net.parameters()).device
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    t0, hist = time.time(), []
    net.train()
    for step in range(cfg.steps):
        idx = batch_indices(len(images), cfg.batch_size, g)
        x, y = flip_shift(images[idx], masks[idx].long(), g, cfg.max_shift, IGNORE_INDEX)
        assert y is not None
        x, y = x.to(device), y.to(device)
        logits = net(x, torch.zeros(len(x), dtype=torch.long, device=device))
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == cfg.steps - 1:
            hist.append([step, loss.item()])
    net.eval()
    return {"loss": hist, "train_seconds": time.time() - t0, "n_train_images": len(images)}


class UNetMethod(Method):
    name = "unet"
    title = "UNet"
    config_class = UNetSegConfig
    reference_baseline = True
    cfg: UNetSegConfig

    def __init__(self, config: UNetSegConfig | dict[str, Any], ctx: MethodContext):
        super().__init__(config, ctx)
        torch.manual_seed(self.cfg.seed)
        self.net = seg_unet(self.cfg, ctx).eval().to(self.device)

    def fit(self, pool: torch.Tensor, images: torch.Tensor, masks: torch.Tensor,
            out_dir: str | Path | None = None) -> dict[str, Any]:
        self.stats = train_seg_unet(self.net, images, masks, self.cfg)
        return self.stats

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> MethodOutput:
        x = image[None].float().to(self.device)
        p = self.net(x, torch.zeros(1, dtype=torch.long, device=self.device))[0].softmax(dim=0)
        ent = -(p * p.clamp_min(1e-12).log()).sum(dim=0)
        return MethodOutput(p, {"entropy": ent}).cpu()

    def state_dict(self) -> dict[str, Any]:
        return self.net.state_dict()

    def load_state_dict(self, sd: dict[str, Any], directory: Path) -> None:
        self.net.load_state_dict(sd)
        self.net.eval()


METHOD = UNetMethod
