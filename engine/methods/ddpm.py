"""`ddpm` (and `ddpm-mn`): the DDPM-feature pixel classifier of the segmentation issue, wrapped.

Features from engine/segmentation/features.py, ensemble from engine/classifier_training.fit_ensemble, saved as a
classifier directory (engine/segmentation/classifier.py) inside the method directory. `ddpm-mn` is the multi-noise
variant: activations averaged over `n_noise` seeded noises (FeatureSpec.n_noise).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..segmentation.classifier import SegmentationClassifier, load_classifier
from ..segmentation.classifier_training import FitConfig, fit_ensemble
from ..errors import UserError
from ..segmentation.features import DEFAULT_STEPS, FeatureExtractor, FeatureSpec
from .base import Method, MethodConfig, MethodContext, MethodOutput
from .head import ENSEMBLE_BUDGETS


@dataclass
class DDPMConfig(MethodConfig):
    """Feature recipe (steps, blocks: None = the model's default blocks) and the ensemble's training."""

    steps: tuple[int, ...] = DEFAULT_STEPS
    blocks: tuple[int, ...] | None = None
    noise_seed: int = 0
    n_noise: int = 1
    members: int = 4
    epochs: int = 3
    arch: str = "ddpm"
    seed: int = 0

    @classmethod
    def _budget(cls, budget: str, **kw: Any) -> DDPMConfig:
        members, epochs, _ = ENSEMBLE_BUDGETS[budget]
        return cls(members=members, epochs=epochs, **kw)

    @classmethod
    def tiny(cls) -> DDPMConfig:
        return cls._budget("tiny", steps=DEFAULT_STEPS[:1])

    @classmethod
    def quick(cls) -> DDPMConfig:
        return cls._budget("quick")

    @classmethod
    def full(cls) -> DDPMConfig:
        return cls._budget("full")


@dataclass
class MultiNoiseConfig(DDPMConfig):
    """`ddpm-mn`: the same, activations averaged over 3 noises by default."""

    n_noise: int = 3


class DDPMMethod(Method):
    name = "ddpm"
    config_class = DDPMConfig
    uses_run = True
    cfg: DDPMConfig

    def __init__(self, config: DDPMConfig | dict[str, Any], ctx: MethodContext):
        super().__init__(config, ctx)
        if ctx.run is None:
            raise UserError(f"{self.name}: needs the pretrained DDPM run (--run)")
        c = self.cfg
        blocks = tuple(c.blocks) if c.blocks else None  # None: the model's default blocks (engine.segmentation.features)
        self.spec = FeatureSpec(tuple(c.steps), blocks, c.noise_seed, c.n_noise).for_model(
            len(ctx.run.model.output_blocks))
        self.clf: SegmentationClassifier | None = None

    def fit_config(self) -> FitConfig:
        c = self.cfg
        return FitConfig(arch=c.arch, members=c.members, max_epochs=c.epochs, seed=c.seed)

    def fit(self, pool: torch.Tensor, images: torch.Tensor, masks: torch.Tensor,
            out_dir: str | Path | None = None) -> dict[str, Any]:
        t0 = time.time()
        maps = FeatureExtractor(self.ctx.run, self.spec, self.ctx.feature_cache).many(images)
        feature_s = time.time() - t0
        model, stats = fit_ensemble(maps, masks, self.ctx.num_classes, self.fit_config(), device=self.device)
        stats.update({"feature_seconds": feature_s, "n_train_images": len(images)})
        self.clf = SegmentationClassifier(self.ctx.run, self.spec, model, self.ctx.classes, self.fit_config(),
                                          int(masks.shape[-1]), stats, self.ctx.feature_cache)
        self.stats = {"train_seconds": time.time() - t0, "feature_seconds": feature_s, "spec": self.spec.to_dict()}
        return self.stats

    def predict(self, image: torch.Tensor) -> MethodOutput:
        assert self.clf is not None, "fit or load first"
        pred = self.clf.predict_tensor(image.float())
        return MethodOutput(pred.probs, {"entropy": pred.entropy, "js": pred.js}, pred.score).cpu()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def modules(self) -> list[torch.nn.Module]:
        return [self.ctx.run.model] + ([self.clf.model] if self.clf is not None else [])

    def save(self, out: str | Path) -> Path:
        assert self.clf is not None, "fit first"
        self.clf.save(Path(out) / "classifier")
        return super().save(out)

    def load_state_dict(self, sd: dict[str, Any], directory: Path) -> None:
        self.clf = load_classifier(directory / "classifier", self.device, run=self.ctx.run, use_cache=False)
        self.clf.cache = self.ctx.feature_cache


class MultiNoiseDDPMMethod(DDPMMethod):
    name = "ddpm-mn"
    config_class = MultiNoiseConfig


def method_for(name: str) -> type[Method]:
    return MultiNoiseDDPMMethod if name == "ddpm-mn" else DDPMMethod
