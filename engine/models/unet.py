"""The guided-diffusion UNet (Dhariwal & Nichol 2021), our implementation, state_dict-compatible.

Layout: `input_blocks` (encoder), `middle_block`, `output_blocks` (decoder, addressable by index as in
ddpm-segmentation), `out`. `forward_features` runs only as far as the last decoder block asked for.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..errors import UserError
from .blocks import (
    AttentionBlock,
    Downsample,
    ResBlock,
    TimestepEmbedSequential,
    Upsample,
    normalization,
    timestep_embedding,
    zero_module,
)
from .config import UNetConfig


class UNetModel(nn.Module):
    """Noise-prediction UNet with timestep embedding, attention at chosen downsample factors."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        emb_dim = c.model_channels * 4
        self.time_embed = nn.Sequential(
            nn.Linear(c.model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        heads_up = c.num_heads if c.num_heads_upsample == -1 else c.num_heads_upsample

        def attention(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, c.num_head_channels, legacy_order=c.legacy_attention_order,
                                  norm_groups=c.norm_groups)

        def resblock(ch_in: int, ch_out: int, **kw: bool) -> ResBlock:
            return ResBlock(ch_in, emb_dim, c.dropout, ch_out, c.use_scale_shift_norm, norm_groups=c.norm_groups, **kw)

        ch = c.model_channels * c.channel_mult[0]
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(c.in_channels, ch, 3, padding=1))])
        skip_chans, ds = [ch], 1
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                layers: list[nn.Module] = [resblock(ch, mult * c.model_channels)]
                ch = mult * c.model_channels
                if ds in c.attention_ds:
                    layers.append(attention(ch, c.num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(c.channel_mult) - 1:
                down = resblock(ch, ch, down=True) if c.resblock_updown else Downsample(ch, True, ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(resblock(ch, ch), attention(ch, c.num_heads), resblock(ch, ch))

        self.output_blocks = nn.ModuleList()
        self.output_channels: list[int] = []  # channels of each decoder block's output
        self.output_ds: list[int] = []  # its downsample factor
        for level, mult in list(enumerate(c.channel_mult))[::-1]:
            for i in range(c.num_res_blocks + 1):
                layers = [resblock(ch + skip_chans.pop(), c.model_channels * mult)]
                ch = c.model_channels * mult
                if ds in c.attention_ds:
                    layers.append(attention(ch, heads_up))
                if level and i == c.num_res_blocks:
                    layers.append(resblock(ch, ch, up=True) if c.resblock_updown else Upsample(ch, True, ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
                self.output_channels.append(ch)
                self.output_ds.append(ds)

        self.out = nn.Sequential(
            normalization(ch, c.norm_groups), nn.SiLU(), zero_module(nn.Conv2d(ch, c.out_channels, 3, padding=1))
        )

    @property
    def downsample_factor(self) -> int:
        """Input sides must be multiples of this."""
        return 2 ** (len(self.config.channel_mult) - 1)

    def _check_input(self, x: torch.Tensor) -> None:
        f = self.downsample_factor
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected input (N, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"input height and width must be multiples of {f}, got {tuple(x.shape[-2:])}")

    def _encode(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        self._check_input(x)
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels))
        skips, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        return h, emb, skips

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predict noise (and variance interpolation when learn_sigma) for noisy images x at timesteps t."""
        h, emb, skips = self._encode(x, t)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)

    def forward_features(self, x: torch.Tensor, t: torch.Tensor, blocks: Iterable[int]) -> dict[int, torch.Tensor]:
        """Outputs of the requested decoder blocks at native resolution; stops after the last one."""
        wanted = sorted(set(int(b) for b in blocks))
        if not wanted:
            raise UserError("no decoder blocks requested")
        n = len(self.output_blocks)
        bad = [b for b in wanted if not 0 <= b < n]
        if bad:
            raise UserError(f"unknown decoder block(s) {bad}; valid blocks are 0..{n - 1}")
        h, emb, skips = self._encode(x, t)
        feats: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.output_blocks):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i in wanted:
                feats[i] = h
            if i == wanted[-1]:
                break
        return feats

    def block_shapes(self, image_size: int | None = None) -> list[tuple[int, int]]:
        """(channels, side) of every decoder block output for a square input of `image_size`."""
        size = image_size or self.config.image_size
        return [(ch, size // ds) for ch, ds in zip(self.output_channels, self.output_ds)]
