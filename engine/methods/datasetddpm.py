"""`datasetddpm`: Baranchuk et al.'s DatasetDDPM — a synthetic labelled data set from the DDPM itself.

1. fit the DDPM pixel classifier (engine/methods/ddpm.py) on the labelled frames;
2. sample `n_samples` frames from the pretrained DDPM (DDIM, `sampling_steps`);
3. label them with the classifier and drop the `drop_fraction` most uncertain by the per-image score
   (mean of the top 10 % JS pixels);
4. train the `unet` method (same network, augmentation and loss) on the kept synthetic pairs only;
   it is evaluated on the real test frames like every other method.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..data.transforms import to_tensor
from ..errors import UserError
from ..diffusion.sampling import sample_images
from .base import Method, MethodConfig, MethodContext, MethodOutput
from .ddpm import DDPMConfig, DDPMMethod
from .unet_seg import UNetMethod, UNetSegConfig


@dataclass
class DatasetDDPMConfig(MethodConfig):
    """How many frames to sample and keep, and the configs of the labeller (ddpm) and the student (unet)."""

    nested: ClassVar[dict[str, type[MethodConfig]]] = {"ddpm": DDPMConfig, "unet": UNetSegConfig}

    n_samples: int = 32
    sampling_steps: int = 15
    drop_fraction: float = 0.1
    seed: int = 0
    ddpm: DDPMConfig = field(default_factory=DDPMConfig.quick)
    unet: UNetSegConfig = field(default_factory=UNetSegConfig.quick)

    @classmethod
    def tiny(cls) -> DatasetDDPMConfig:
        return cls(n_samples=3, sampling_steps=2, drop_fraction=0.34, ddpm=DDPMConfig.tiny(), unet=UNetSegConfig.tiny())

    @classmethod
    def quick(cls) -> DatasetDDPMConfig:
        return cls(n_samples=32, sampling_steps=15)

    @classmethod
    def full(cls) -> DatasetDDPMConfig:
        return cls(n_samples=3000, sampling_steps=50, ddpm=DDPMConfig.full(), unet=UNetSegConfig.full())


class DatasetDDPMMethod(Method):
    name = "datasetddpm"
    title = "UNet trained on DDPM samples labelled by ddpm"
    config_class = DatasetDDPMConfig
    uses_run = True
    cfg: DatasetDDPMConfig

    def __init__(self, config: DatasetDDPMConfig | dict[str, Any], ctx: MethodContext):
        super().__init__(config, ctx)
        if ctx.run is None:
            raise UserError("datasetddpm: needs the pretrained DDPM run (--run)")
        self.unet = UNetMethod(self.cfg.unet, ctx)

    def modules(self) -> list[torch.nn.Module]:
        return self.unet.modules()

    def fit(self, pool: torch.Tensor, images: torch.Tensor, masks: torch.Tensor,
            out_dir: str | Path | None = None) -> dict[str, Any]:
        c, t0 = self.cfg, time.time()
        labeller = DDPMMethod(c.ddpm, self.ctx)
        labeller.fit(pool, images, masks)
        t1 = time.time()
        frames = sample_images(self.ctx.run, c.n_samples, "ddim", c.sampling_steps, c.seed, batch_size=8)
        synth = torch.stack([to_tensor(f) for f in frames])
        t2 = time.time()
        labels, scores = [], []
        for img in synth:
            out = labeller.predict(img)
            labels.append(out.labels.to(torch.uint8))
            scores.append(float(out.score or 0.0))  # the ddpm labeller always scores
        keep_n = max(1, len(synth) - int(round(c.drop_fraction * len(synth))))
        keep = sorted(range(len(synth)), key=lambda i: scores[i])[:keep_n]
        unet_stats = self.unet.fit(pool, synth[keep], torch.stack(labels)[keep])
        self.stats = {"train_seconds": time.time() - t0, "labeller_seconds": t1 - t0, "sampling_seconds": t2 - t1,
                      "n_generated": len(synth), "n_kept": keep_n, "scores": scores,
                      "score_cutoff": max(scores[i] for i in keep), "unet": unet_stats}
        if out_dir is not None:  # keep a look at the synthetic data set next to the weights
            from ..data.synthetic import save_grid

            k = keep[:16]
            save_grid([frames[i] for i in k] + [self.ctx.classes.colorize(labels[i].numpy()) for i in k],
                      Path(out_dir) / "synthetic_pairs.png", ncol=max(1, len(k)))
        return self.stats

    def predict(self, image: torch.Tensor) -> MethodOutput:
        return self.unet.predict(image)

    def state_dict(self) -> dict[str, Any]:
        return self.unet.state_dict()

    def load_state_dict(self, sd: dict[str, Any], directory: Path) -> None:
        self.unet.load_state_dict(sd, directory)


METHOD = DatasetDDPMMethod
