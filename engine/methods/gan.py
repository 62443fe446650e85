"""`gan`: GAN features (the study's DatasetGAN row, in our shared pixel-head framework).

Architecture (chosen for 2 CPU cores at 64 px): a DCGAN generator (Radford et al. 2016; z → 4×4 →
transposed-conv doublings → S×S, BatchNorm + ReLU, tanh), a DCGAN discriminator (strided convs, LeakyReLU,
spectral norm for stability at tiny batch sizes) with the non-saturating loss, and an encoder E trained
WITH the generator so that real frames can be mapped into it without per-frame optimisation:
  - latent regression on samples: |E(G(z)) − z|² (E learns to invert G, as in BiGAN/ALI's goal);
  - reconstruction of real frames: |G(E(x)) − x|² (pulls G(E(x)) towards the real frame; G receives it too).
StyleGAN or projected GANs need far more compute than a few CPU minutes; DCGAN trains in that time.
Segmentation features of a real frame x: the generator's activations at every resolution for z = E(x)
(the DatasetGAN idea: generator features carry semantics), plus the encoder's own maps, which are aligned
with x even where G(E(x)) reconstructs it imperfectly. All maps → the shared factorised pixel head.
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
from torch.nn.utils import spectral_norm

from ..errors import ConfigError
from .base import MethodContext, batch_indices, seeded
from .head import BackboneHeadMethod, HeadConfig


class Generator(nn.Module):
    """z (N, zdim) → image (N, 3, S, S) in [-1, 1]; `features` also returns each resolution's activations."""

    def __init__(self, zdim: int, width: int, image_size: int):
        super().__init__()
        n_up = int(math.log2(image_size // 4))
        chans = [width * 2 ** max(0, n_up - 1 - i) for i in range(n_up)]  # e.g. 8w, 4w, 2w, w
        self.fc = nn.Sequential(nn.Linear(zdim, chans[0] * 16), nn.BatchNorm1d(chans[0] * 16), nn.ReLU(True))
        self.c0 = chans[0]
        ups, cin = [], chans[0]
        for c in chans[1:] + [chans[-1]]:
            ups.append(nn.Sequential(nn.ConvTranspose2d(cin, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ReLU(True)))
            cin = c
        self.ups = nn.ModuleList(ups)
        self.to_rgb = nn.Conv2d(cin, 3, 3, padding=1)
        self.channels = [c for c in chans[1:] + [chans[-1]]]

    def features(self, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.fc(z).view(len(z), self.c0, 4, 4)
        maps = []
        for up in self.ups:
            h = up(h)
            maps.append(h)
        return torch.tanh(self.to_rgb(h)), maps

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.features(z)[0]


class Encoder(nn.Module):
    """image → (N, out) through strided convs; `features` returns the maps at S/2, S/4, S/8."""

    def __init__(self, width: int, image_size: int, out: int, sn: bool = False):
        super().__init__()
        wrap = spectral_norm if sn else (lambda m: m)
        n_down = int(math.log2(image_size // 4))
        layers, cin = [], 3
        self.channels = []
        for i in range(n_down):
            c = width * 2 ** i
            layers.append(nn.Sequential(wrap(nn.Conv2d(cin, c, 4, 2, 1)), nn.LeakyReLU(0.2, True)))
            self.channels.append(c)
            cin = c
        self.downs = nn.ModuleList(layers)
        self.head = wrap(nn.Linear(cin * 16, out))

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        maps, h = [], x
        for d in self.downs:
            h = d(h)
            maps.append(h)
        return self.head(h.flatten(1)), maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[0]


class GANNet(nn.Module):
    def __init__(self, zdim: int, width: int, image_size: int):
        super().__init__()
        self.G = Generator(zdim, width, image_size)
        self.D = Encoder(width, image_size, 1, sn=True)
        self.E = Encoder(width, image_size, zdim)
        self.zdim = zdim

    def seg_maps(self, x: torch.Tensor, enc_maps: int) -> list[torch.Tensor]:
        """Generator maps for z = E(x) (every resolution) + the encoder's first `enc_maps` maps."""
        z, emaps = self.E.features(x)
        _, gmaps = self.G.features(z)
        return gmaps + emaps[:enc_maps]


@dataclass
class GANConfig(HeadConfig):
    """DCGAN generator + spectral-norm discriminator + encoder trained with them, then the shared pixel head."""

    zdim: int = 64
    width: int = 16
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    batch_size: int = 16
    rec_weight: float = 1.0  # |G(E(x)) − x|² on real frames
    lat_weight: float = 1.0  # |E(G(z)) − z|² on samples
    encoder_maps: int = 2  # the encoder's first maps (S/2, S/4, …) added to the generator's
    steps: int = 600

    @classmethod
    def tiny(cls) -> GANConfig:
        return cls.budgeted("tiny", zdim=16, width=8, steps=2, batch_size=4)

    @classmethod
    def quick(cls) -> GANConfig:
        return cls.budgeted("quick", steps=600)

    @classmethod
    def full(cls) -> GANConfig:
        return cls.budgeted("full", width=32, zdim=128, steps=20000, batch_size=32)


class GANMethod(BackboneHeadMethod):
    name = "gan"
    title = "GAN features (DCGAN + encoder)"
    config_class = GANConfig
    cfg: GANConfig

    def __init__(self, config: GANConfig | dict[str, Any], ctx: MethodContext):
        super().__init__(config, ctx)
        c = self.cfg
        if ctx.image_size < 16 or ctx.image_size & (ctx.image_size - 1):
            raise ConfigError(f"gan: image size must be a power of two ≥ 16, got {ctx.image_size}")
        torch.manual_seed(c.seed)
        self._build(GANNet(c.zdim, c.width, ctx.image_size))

    def map_channels(self) -> list[int]:
        net: GANNet = self.net  # type: ignore[assignment]
        return net.G.channels + net.E.channels[:self.cfg.encoder_maps]

    def _maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        net: GANNet = self.net  # type: ignore[assignment]
        return net.seg_maps(x.float().to(self.device), self.cfg.encoder_maps)

    def fit(self, pool: torch.Tensor, images: torch.Tensor, masks: torch.Tensor,
            out_dir: str | Path | None = None) -> dict[str, Any]:
        c, g = self.cfg, seeded(self.cfg.seed)
        net: GANNet = self.net  # type: ignore[assignment]
        opt_d = torch.optim.Adam(net.D.parameters(), lr=c.lr, betas=c.betas)
        opt_ge = torch.optim.Adam(list(net.G.parameters()) + list(net.E.parameters()), lr=c.lr, betas=c.betas)
        t0, hist = time.time(), []
        net.train()
        for step in range(c.steps):
            x = pool[batch_indices(len(pool), c.batch_size, g)].float()
            if torch.rand((), generator=g) < 0.5:
                x = x.flip(-1)
            z = torch.randn(len(x), net.zdim, generator=g)
            x, z = x.to(self.device), z.to(self.device)
            # discriminator: non-saturating loss on real vs generated frames
            fake = net.G(z)
            d_loss = F.softplus(-net.D(x)).mean() + F.softplus(net.D(fake.detach())).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            # generator + encoder: fool D, invert G on samples, reconstruct real frames
            g_adv = F.softplus(-net.D(fake)).mean()
            lat = F.mse_loss(net.E(fake.detach()), z)
            rec = F.mse_loss(net.G(net.E(x)), x)
            ge_loss = g_adv + c.lat_weight * lat + c.rec_weight * rec
            opt_ge.zero_grad(set_to_none=True)
            ge_loss.backward()
            opt_ge.step()
            if step % 25 == 0 or step == c.steps - 1:
                hist.append([step, d_loss.item(), g_adv.item(), lat.item(), rec.item()])
        net.eval()
        stats = self._fit_head(hist, t0, pool, images, masks)
        stats["loss_columns"] = ["step", "d", "g_adv", "latent", "reconstruction"]
        return stats

    @torch.no_grad()
    def samples(self, n: int, seed: int = 0) -> torch.Tensor:
        """n generated frames (for a look at what the GAN learnt)."""
        net: GANNet = self.net  # type: ignore[assignment]
        z = torch.randn(n, net.zdim, generator=seeded(seed))
        return net.G(z.to(self.device)).cpu()


METHOD = GANMethod
