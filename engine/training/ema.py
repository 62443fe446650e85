"""Exponential moving average of model weights (the weights used for sampling and features)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import ConfigError


class EMA:
    """shadow ← decay·shadow + (1-decay)·param after every optimiser step; buffers are copied."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].mul_(self.decay).add_(v.detach().float(), alpha=1 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.shadow.items()}

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) ^ set(sd)
        if missing:
            raise KeyError(f"EMA state does not match the model: {sorted(missing)[:3]}")
        self.shadow = {k: v.clone().float() for k, v in sd.items()}

    def shadow_model(self, model: nn.Module) -> nn.Module:
        """A copy of `model` holding the EMA weights (the training model is left untouched)."""
        m = copy.deepcopy(model)
        m.load_state_dict(self.shadow)
        return m
