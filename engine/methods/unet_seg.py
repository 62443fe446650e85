"""`unet`: a UNet trained from scratch on the labelled frames only (the study's weakest baseline).

The network is our guided-diffusion UNetModel with in_channels 3, out_channels C and a constant t = 0
(so no new architecture code). Augmentation: random horizontal/vertical flips and integer shifts of
up to `max_shift` pixels (mask edges uncovered by a shift are ignored). Loss: pixel cross-entropy
(255 ignored), Adam.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..models.config import UNetConfig
from ..models.unet import UNetModel
from .base import Method, MethodContext, MethodOutput, batch_indices, flip_shift, seeded

IGNORE = 255


def seg_unet(cfg: dict[str, Any], ctx: MethodContext) -> UNetModel:
    mult = tuple(cfg["channel_mult"])
    return UNetModel(UNetConfig(image_size=ctx.image_size, in_channels=3, out_channels=ctx.num_classes,
                                model_channels=cfg["channels"], channel_mult=mult, num_res_blocks=cfg["res_blocks"],
                                attention_ds=(), num_head_channels=32, dropout=cfg.get("dropout", 0.0)))


def train_seg_unet(net: UNetModel, images: torch.Tensor, masks: torch.Tensor, cfg: dict[str, Any],
                   seed: int) -> dict[str, Any]:
    """Cross-entropy training with flips + shifts; returns stats (loss history, seconds)."""
    g = seeded(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=1e-4)
    t0, hist = time.time(), []
    net.train()
    for step in range(cfg["steps"]):
        idx = batch_indices(len(images), cfg["batch_size"], g)
        x, y = flip_shift(images[idx], masks[idx].long(), g, cfg["max_shift"], IGNORE)
        logits = net(x, torch.zeros(len(x), dtype=torch.long))
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == cfg["steps"] - 1:
            hist.append([step, loss.item()])
    net.eval()
    return {"loss": hist, "train_seconds": time.time() - t0, "n_train_images": len(images)}


class UNetMethod(Method):
    name = "unet"

    def __init__(self, config: dict[str, Any], ctx: MethodContext):
        super().__init__(config, ctx)
        torch.manual_seed(self.config["seed"])
        self.net = seg_unet(self.config, ctx).eval()

    @classmethod
    def default_config(cls, budget: str = "quick") -> dict[str, Any]:
        base = {"channels": 32, "channel_mult": [1, 2, 2], "res_blocks": 1, "lr": 1e-3, "batch_size": 8,
                "max_shift": 4, "augment": "hflip+vflip+shift", "seed": 0}
        if budget == "tiny":
            return {**base, "channels": 32, "channel_mult": [1, 1], "steps": 3, "batch_size": 2, "max_shift": 2}
        if budget == "quick":
            return {**base, "batch_size": 4, "steps": 150}
        return {**base, "channels": 64, "channel_mult": [1, 2, 2, 4], "res_blocks": 2, "steps": 4000}

    def fit(self, pool: torch.Tensor, images: torch.Tensor, masks: torch.Tensor,
            out_dir: str | Path | None = None) -> dict[str, Any]:
        self.stats = train_seg_unet(self.net, images, masks, self.config, self.config["seed"])
        return self.stats

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> MethodOutput:
        p = self.net(image[None].float(), torch.zeros(1, dtype=torch.long))[0].softmax(dim=0)
        ent = -(p * p.clamp_min(1e-12).log()).sum(dim=0)
        return MethodOutput(p, {"entropy": ent})

    def state_dict(self) -> dict[str, Any]:
        return self.net.state_dict()

    def load_state_dict(self, sd: dict[str, Any], directory: Path) -> None:
        self.net.load_state_dict(sd)
        self.net.eval()


METHOD = UNetMethod
