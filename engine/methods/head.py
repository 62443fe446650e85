"""The shared pixel head for self-supervised backbones (MAE, SwAV): the DDPM method's own ensemble.

A backbone gives native-resolution maps (list of (N, C_k, h_k, w_k)); `fit_ensemble` trains the same
factorised EnsembleMLP as the DDPM method on them, and `predict_logits` upsamples only hidden channels.
`ENSEMBLE_BUDGETS` is the one table of ensemble sizes per budget (the ddpm method uses it too).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import torch

from ..segmentation.classifier_training import FitConfig, fit_ensemble
from ..segmentation.pixel_classifier import EnsembleMLP, hidden_sizes, summarise
from .base import Method, MethodConfig, MethodOutput

MapsFn = Callable[[torch.Tensor], list[torch.Tensor]]  # (N,3,S,S) → list of (N,C_k,h_k,w_k)

#: budget → (ensemble members, epochs, max training pixels) of a pixel head
ENSEMBLE_BUDGETS: dict[str, tuple[int, int, int]] = {"tiny": (2, 1, 200_000), "quick": (4, 3, 200_000),
                                                     "full": (10, 8, 400_000)}


@dataclass
class HeadConfig(MethodConfig):
    """Pixel-head fields shared by the backbone methods (MAE, SwAV); budgets from ENSEMBLE_BUDGETS."""

    head_members: int = 4
    head_epochs: int = 3
    head_max_pixels: int = 200_000
    seed: int = 0

    @classmethod
    def budgeted(cls, budget: str, **fields: Any) -> Self:
        """The config with `fields` set and the head sized by ENSEMBLE_BUDGETS[budget]."""
        members, epochs, pixels = ENSEMBLE_BUDGETS[budget]
        return cls(head_members=members, head_epochs=epochs, head_max_pixels=pixels, **fields)


def fit_config(cfg: HeadConfig) -> FitConfig:
    return FitConfig(members=cfg.head_members, max_epochs=cfg.head_epochs, max_pixels=cfg.head_max_pixels,
                     seed=cfg.seed)


@torch.no_grad()
def stacked_maps(maps_fn: MapsFn, images: torch.Tensor, batch: int = 8) -> list[torch.Tensor]:
    parts = [maps_fn(images[s:s + batch]) for s in range(0, len(images), batch)]
    return [torch.cat([p[k] for p in parts]).float().cpu() for k in range(len(parts[0]))]


def fit_head(maps_fn: MapsFn, images: torch.Tensor, masks: torch.Tensor, num_classes: int,
             cfg: HeadConfig, device: torch.device) -> tuple[EnsembleMLP, dict[str, Any]]:
    return fit_ensemble(stacked_maps(maps_fn, images.to(device)), masks, num_classes, fit_config(cfg), device=device)


def new_head(channels: int, num_classes: int, cfg: HeadConfig) -> EnsembleMLP:
    fc = fit_config(cfg)
    return EnsembleMLP(channels, num_classes, hidden_sizes(fc.arch, num_classes), fc.members, fc.seed)


@torch.no_grad()
def predict_head(head: EnsembleMLP, maps_fn: MapsFn, image: torch.Tensor) -> MethodOutput:
    device = next(head.parameters()).device
    maps = [m[0].float() for m in maps_fn(image[None].to(device))]
    pred = summarise(head.predict_logits(maps, tuple(image.shape[-2:])))
    return MethodOutput(pred.probs, {"entropy": pred.entropy, "js": pred.js}, pred.score).cpu()


class BackboneHeadMethod(Method):
    """A self-supervised backbone `self.net` (pretrained by the subclass's `fit`) feeding the shared pixel
    head `self.head` through `self._maps`; fitting the head, prediction and persistence live here."""

    net: torch.nn.Module
    head: EnsembleMLP

    def _build(self, net: torch.nn.Module) -> None:
        """Hold the backbone and a fresh head sized by the backbone's own map widths, on the device."""
        self.net = net.eval().to(self.device)
        self.head = new_head(sum(self.map_channels()), self.ctx.num_classes, self.cfg).to(self.device)

    def map_channels(self) -> list[int]:
        """Channels of each map `_maps` returns (read from the network, never typed by hand)."""
        raise NotImplementedError

    def _maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def _fit_head(self, hist: list, t0: float, pool: torch.Tensor, images: torch.Tensor,
                  masks: torch.Tensor) -> dict[str, Any]:
        """After pretraining (started at `t0`, loss history `hist`): fit the head on the labelled frames."""
        self.net.eval()
        pretrain_s = time.time() - t0
        self.head, head_stats = fit_head(self._maps, images, masks, self.ctx.num_classes, self.cfg, self.device)
        self.stats = {"pretrain_loss": hist, "pretrain_seconds": pretrain_s, "pool_size": len(pool),
                      "head_seconds": head_stats["train_seconds"], "feature_dim": head_stats["feature_dim"],
                      "train_seconds": time.time() - t0}
        return self.stats

    def predict(self, image: torch.Tensor) -> MethodOutput:
        return predict_head(self.head, self._maps, image)

    def state_dict(self) -> dict[str, Any]:
        return {**{f"net.{k}": v for k, v in self.net.state_dict().items()},
                **{f"head.{k}": v for k, v in self.head.state_dict().items()}}

    def load_state_dict(self, sd: dict[str, Any], directory: Path) -> None:
        self.net.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("net.")})
        self.head.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("head.")})
        self.net.eval()
        self.head.eval()
