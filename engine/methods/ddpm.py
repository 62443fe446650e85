"""`ddpm` (and `ddpm-mn`): the DDPM-feature pixel classifier of the segmentation issue, wrapped.

Features from engine/features.py, ensemble from engine/classifier_training.fit_ensemble, saved as a
classifier directory (engine/classifier.py) inside the method directory. `ddpm-mn` is the multi-noise
variant: activations averaged over `n_noise` seeded noises (FeatureSpec.n_noise).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..classifier import SegmentationClassifier, load_classifier
from ..classifier_training import FitConfig, fit_ensemble
from ..features import FeatureExtractor, FeatureSpec
from .base import Method, MethodContext, MethodOutput


def default_blocks(run) -> list[int]:  # noqa: ANN001
    from ..commands.segmentation_cmds import default_blocks as blocks

    return blocks(run)


class DDPMMethod(Method):
    name = "ddpm"
    n_noise_default = 1

    def __init__(self, config: dict[str, Any], ctx: MethodContext):
        super().__init__(config, ctx)
        if ctx.run is None:
            raise ValueError(f"{self.name}: needs the pretrained DDPM run (--run)")
        c = self.config
        blocks = c["blocks"] if c["blocks"] else default_blocks(ctx.run)
        self.spec = FeatureSpec(tuple(c["steps"]), tuple(blocks), c["noise_seed"], c["n_noise"])
        self.clf: SegmentationClassifier | None = None

    def uses_run(self) -> bool:
        return True

    @classmethod
    def default_config(cls, budget: str = "quick") -> dict[str, Any]:
        members, epochs = {"tiny": (2, 1), "quick": (4, 3), "full": (10, 8)}[budget]
        steps = [50, 150, 250] if budget != "tiny" else [50]
        return {"steps": steps, "blocks": None, "noise_seed": 0, "n_noise": cls.n_noise_default, "members": members,
                "epochs": epochs, "arch": "ddpm", "seed": 0}

    def fit_config(self) -> FitConfig:
        c = self.config
        return FitConfig(arch=c["arch"], members=c["members"], max_epochs=c["epochs"], seed=c["seed"])

    def fit(self, pool: torch.Tensor, images: torch.Tensor, masks: torch.Tensor,
            out_dir: str | Path | None = None) -> dict[str, Any]:
        t0 = time.time()
        maps = FeatureExtractor(self.ctx.run, self.spec, self.ctx.feature_cache).many(images)
        feature_s = time.time() - t0
        model, stats = fit_ensemble(maps, masks, self.ctx.num_classes, self.fit_config())
        stats.update({"feature_seconds": feature_s, "n_train_images": len(images)})
        self.clf = SegmentationClassifier(self.ctx.run, self.spec, model, self.ctx.classes, self.fit_config(),
                                          int(masks.shape[-1]), stats, self.ctx.feature_cache)
        self.stats = {"train_seconds": time.time() - t0, "feature_seconds": feature_s, "spec": self.spec.to_dict()}
        return self.stats

    def predict(self, image: torch.Tensor) -> MethodOutput:
        assert self.clf is not None, "fit or load first"
        pred = self.clf.predict_tensor(image.float())
        return MethodOutput(pred.probs, {"entropy": pred.entropy, "js": pred.js}, pred.score)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def save(self, out: str | Path) -> Path:
        assert self.clf is not None, "fit first"
        self.clf.save(Path(out) / "classifier")
        return super().save(out)

    def load_state_dict(self, sd: dict[str, Any], directory: Path) -> None:
        self.clf = load_classifier(directory / "classifier", run=self.ctx.run, use_cache=False)
        self.clf.cache = self.ctx.feature_cache


class MultiNoiseDDPMMethod(DDPMMethod):
    name = "ddpm-mn"
    n_noise_default = 3


def method_for(name: str) -> type[Method]:
    return MultiNoiseDDPMMethod if name == "ddpm-mn" else DDPMMethod
