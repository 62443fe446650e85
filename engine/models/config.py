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

    @property
    def num_output_blocks(self) -> int:
        """How many decoder blocks (`output_blocks[i]`) the network has."""
        return len(self.channel_mult) * (self.num_res_blocks + 1)

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

    @classmethod
    def from_guided_diffusion_flags(cls, **flags: Any) -> "UNetConfig":
        """Build a config from guided-diffusion's script flags (num_channels, attention_resolutions="32,16,8", ...)."""
        image_size = int(flags.get("image_size", 256))
        mult = flags.get("channel_mult", "")
        if not mult:
            mult = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}.get(image_size)
            if mult is None:
                raise ValueError(f"no default channel_mult for image_size {image_size}; pass channel_mult")
        elif isinstance(mult, str):
            mult = tuple(int(m) for m in mult.split(","))
        res = flags.get("attention_resolutions", "32,16,8")
        res_list = [int(r) for r in res.split(",")] if isinstance(res, str) else [int(r) for r in res]
        in_ch = int(flags.get("in_channels", 3))
        return cls(
            image_size=image_size,
            in_channels=in_ch,
            model_channels=int(flags.get("num_channels", 128)),
            out_channels=in_ch * (2 if flags.get("learn_sigma", False) else 1),
            num_res_blocks=int(flags.get("num_res_blocks", 2)),
            attention_ds=tuple(image_size // r for r in res_list),
            dropout=float(flags.get("dropout", 0.0)),
            channel_mult=tuple(mult),
            num_heads=int(flags.get("num_heads", 4)),
            num_head_channels=int(flags.get("num_head_channels", -1)),
            num_heads_upsample=int(flags.get("num_heads_upsample", -1)),
            use_scale_shift_norm=bool(flags.get("use_scale_shift_norm", True)),
            resblock_updown=bool(flags.get("resblock_updown", False)),
            legacy_attention_order=not bool(flags.get("use_new_attention_order", False)),
        )


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
    # colour-cast remedies (engine/diffusion/weighting.py); 0 = off, the values of every shipped run
    offset_noise: float = 0.0  # std of a per-image, per-channel constant added to eps (offset noise)
    min_snr_gamma: float = 0.0  # min-SNR-γ loss weighting (Hang et al. 2023), e.g. 5

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
