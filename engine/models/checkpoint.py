"""Loading UNet weights safely: guided-diffusion `.pt` state_dicts, flag inference, clear mismatch errors.

Everything is read with `torch.load(weights_only=True)`: a pickle that tries to run code is refused.
"""
from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .config import UNetConfig
from .unet import UNetModel


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says which file and why."""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Content hash of a file (used to key feature caches on the exact weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a bare state_dict (or {'state_dict'|'model'|'ema': ...}) without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load: it holds objects other than tensors "
                              f"(only plain state_dicts are accepted; nothing in it was executed). "
                              f"Detail: {_unpickling_detail(e)}") from None
    except Exception as e:  # noqa: BLE001 - the weights-only unpickler raises many types on garbage (IndexError on text)
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
                              f"{' '.join(str(e).split())[:200]}") from None
    if isinstance(obj, dict):
        for key in ("ema", "state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state_dict (expected a mapping of parameter names to tensors, "
                              f"got {type(obj).__name__})")
    sd = {k.removeprefix("module."): v for k, v in obj.items()}
    check_finite(sd, str(path))
    return sd


def check_finite(tensors: dict[str, Any], source: str) -> None:
    """Refuse weights holding NaN or Infinity, naming the first bad tensor (nested dicts are walked):
    such weights make every output silently wrong (all-zero masks, black samples, NaN scores)."""
    for key, value in tensors.items():
        if isinstance(value, dict):
            check_finite(value, f"{source} [{key}]")
        elif isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            bad = ~torch.isfinite(value)
            if bool(bad.any()):
                n = int(bad.sum())
                raise CheckpointError(f"{source}: tensor {key!r} holds {n} non-finite value(s) (NaN or Infinity) "
                                      f"of {value.numel()}; the weights are corrupt or training diverged")


def _unpickling_detail(e: BaseException) -> str:
    """The useful part of torch's weights-only refusal, on one line, without its advice to set weights_only=False."""
    boiler = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [ln.replace("WeightsUnpickler error:", "").strip() for ln in str(e).splitlines()]
    detail = " ".join(ln for ln in lines if ln and not ln.startswith(boiler))
    return detail[:200] or type(e).__name__


def _block_count(sd: dict[str, torch.Tensor], prefix: str) -> int:
    idx = {int(m.group(1)) for k in sd if (m := re.match(rf"{prefix}\.(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def infer_unet_config(sd: dict[str, torch.Tensor], **overrides: Any) -> UNetConfig:
    """Infer channels, levels, res blocks, attention placement and learn_sigma from weight shapes.

    Head size, attention order and GroupNorm groups are not visible in weights; they default to
    guided-diffusion's 256×256 model (64-channel heads, legacy order, 32 groups) and can be overridden.
    """
    try:
        first = sd["input_blocks.0.0.weight"]
        out = sd["out.2.weight"]
    except KeyError as e:
        raise CheckpointError(f"not a guided-diffusion UNet state_dict: missing key {e.args[0]!r}") from None
    model_ch, in_ch, out_ch = first.shape[0], first.shape[1], out.shape[0]
    n_out = _block_count(sd, "output_blocks")
    if n_out == 0:
        raise CheckpointError("not a guided-diffusion UNet state_dict: no output_blocks")

    def is_upsampler(i: int) -> bool:
        subs = {int(m.group(1)) for k in sd if (m := re.match(rf"output_blocks\.{i}\.(\d+)\.", k))}
        return any(j >= 1 and (f"output_blocks.{i}.{j}.conv.weight" in sd or f"output_blocks.{i}.{j}.in_layers.0.weight" in sd)
                   for j in subs)

    ups = [i for i in range(n_out) if is_upsampler(i)]
    num_res = ups[0] if ups else n_out - 1
    levels = n_out // (num_res + 1)
    mult, attn = [], []
    for k in range(levels):  # decoder level k handles encoder level levels-1-k
        i = k * (num_res + 1)
        ch = sd[f"output_blocks.{i}.0.out_layers.3.weight"].shape[0]
        mult.append(ch // model_ch)
        if f"output_blocks.{i}.1.qkv.weight" in sd:
            attn.append(2 ** (levels - 1 - k))
    updown = any(f"input_blocks.{j}.0.in_layers.0.weight" in sd and f"input_blocks.{j}.0.op.weight" not in sd
                 for j in [(num_res + 1) * (lv + 1) for lv in range(levels - 1)])
    scale_shift = sd["middle_block.0.emb_layers.1.weight"].shape[0] == 2 * sd["middle_block.0.out_layers.3.weight"].shape[0]
    params: dict[str, Any] = dict(
        in_channels=in_ch, model_channels=model_ch, out_channels=out_ch, num_res_blocks=num_res,
        channel_mult=tuple(mult[::-1]), attention_ds=tuple(sorted(attn)), resblock_updown=updown,
        use_scale_shift_norm=scale_shift, num_head_channels=64, legacy_attention_order=True, image_size=256,
    )
    params.update(overrides)
    return UNetConfig(**params)


def check_compatible(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise a CheckpointError naming the first missing/unexpected key or shape mismatch."""
    own = model.state_dict()
    for key, tensor in own.items():
        if key not in sd:
            raise CheckpointError(f"{source}: missing key {key!r} (model expects shape {tuple(tensor.shape)}); "
                                  "the checkpoint was made for another architecture or preset")
        if sd[key].shape != tensor.shape:
            raise CheckpointError(f"{source}: key {key!r} has shape {tuple(sd[key].shape)} in the checkpoint but "
                                  f"{tuple(tensor.shape)} in the model; the flags/preset do not match the checkpoint")
    extra = sorted(set(sd) - set(own))
    if extra:
        raise CheckpointError(f"{source}: unexpected key {extra[0]!r} (+{len(extra) - 1} more); "
                              "the checkpoint was made for another architecture or preset")


def load_unet(path: str | Path, config: UNetConfig | None = None, **flag_overrides: Any) -> UNetModel:
    """Build a UNet from a state_dict file: with `config` if given, else inferred from the weights."""
    sd = read_state_dict(path)
    cfg = config or infer_unet_config(sd, **flag_overrides)
    try:
        model = UNetModel(cfg)
    except ValueError as e:
        raise CheckpointError(f"{path}: cannot build a UNet with these flags: {e}") from None
    check_compatible(model, sd, str(path))
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    return model.eval()
