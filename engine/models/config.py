"""UNet configuration as a small dataclass, plus the size presets (tiny / demo / paper)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class UNetConfig:
    """Hyper-parameters of the guided-diffusion UNet; `attention_ds` holds downsample factors (8 = 1/8 res)."""

    image_size: int = 64
    in_channels: int = 3
    model_channels: int = 64
    out_channels: int = 3
    num_res_blocks: int = 2
    attention_ds: tuple[int, ...] = (8,)
    dropout: float = 0.0
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_heads: int = 1
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    legacy_attention_order: bool = True
    # GroupNorm groups. 32 is guided-diffusion's; with 32 channels that is one channel per group, an instance
    # norm that erases each channel's spatial mean, so the network cannot see the frame's global colour and
    # samples drift to colour casts. Narrow presets use fewer groups (same parameters, same state_dict keys).
    norm_groups: int = 32

    @property
    def learn_sigma(self) -> bool:
        """Whether the network also predicts the variance interpolation (doubled output channels)."""
        return self.out_channels == 2 * self.in_channels

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attention_ds"] = list(self.attention_ds)
        d["channel_mult"] = list(self.channel_mult)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNetConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown UNet config keys: {sorted(unknown)}")
        d = dict(d)
        for key in ("attention_ds", "channel_mult"):
            if key in d:
                d[key] = tuple(int(v) for v in d[key])
        return cls(**d)

@dataclass
class DiffusionConfig:
    """The noise process: schedule, number of steps T, what the network predicts and the loss."""

    num_timesteps: int = 1000
    schedule: str = "linear"
    learn_sigma: bool = False
    loss: str = "mse"  # "mse" or "hybrid" (mse + λ·vlb, needs learn_sigma)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DiffusionConfig":
        return cls(**d)


@dataclass
class TrainConfig:
    """Optimisation settings of pretraining."""

    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    max_steps: int = 10000
    save_every: int = 500
    sample_every: int = 1000
    log_every: int = 10
    seed: int = 0
    hflip: bool = True
    vflip: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        return cls(**d)


@dataclass
class Preset:
    """A named bundle of model, diffusion and training settings."""

    name: str
    unet: UNetConfig
    diffusion: DiffusionConfig
    train: TrainConfig = field(default_factory=TrainConfig)


def _presets() -> dict[str, Preset]:
    tiny = Preset(
        "tiny",
        UNetConfig(image_size=32, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                   attention_ds=(2,), num_head_channels=32),
        DiffusionConfig(num_timesteps=1000),
        TrainConfig(batch_size=4, max_steps=200, save_every=50, sample_every=100, log_every=5),
    )
    demo = Preset(
        "demo",
        UNetConfig(image_size=64, model_channels=32, channel_mult=(1, 2, 2, 4), num_res_blocks=2,
                   attention_ds=(4, 8), num_head_channels=32, norm_groups=8),
        DiffusionConfig(num_timesteps=1000),
        TrainConfig(batch_size=8, lr=2e-4, max_steps=4000, save_every=250, sample_every=500, log_every=10, ema_decay=0.995),
    )
    paper = Preset(
        "paper",
        UNetConfig(image_size=256, model_channels=256, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
                   attention_ds=(8, 16, 32), num_head_channels=64, out_channels=6),
        DiffusionConfig(num_timesteps=1000, learn_sigma=True, loss="hybrid"),
        TrainConfig(batch_size=4, max_steps=200000, save_every=2000, sample_every=10000, log_every=50, ema_decay=0.9999),
    )
    return {p.name: p for p in (tiny, demo, paper)}


PRESETS: dict[str, Preset] = _presets()


def get_preset(name: str) -> Preset:
    """Return a fresh copy of a named preset; unknown names list the valid ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return _presets()[name]
