"""Run directories: config.json + EMA weights (+ training state) of one pretrained diffusion model.

Layout of RUN/:
  config.json      {"format_version", "preset", "unet", "diffusion", "train", "data", "step", "ema_sha256"}
                   (written last; ema_sha256 names the ema.pt it belongs to, checked at load)
  ema.pt           EMA weights as a bare guided-diffusion-style state_dict (what inference uses)
  train_state.pt   model + EMA + optimiser + step, for `pretrain --resume` (not needed to use a run)
  loss.jsonl       one JSON line per logged step
  samples/         sample grids written during training
A RUN may also be a guided-diffusion `.pt` file; its flags are inferred or given.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_directory, json_text, write_json_atomic
from .diffusion import GaussianDiffusion
from .models.checkpoint import CheckpointError, file_sha256, load_unet, read_state_dict
from .models.config import DiffusionConfig, UNetConfig
from .models.unet import UNetModel

FORMAT_VERSION = 1
CONFIG_FILE, EMA_FILE, STATE_FILE, LOSS_FILE = "config.json", "ema.pt", "train_state.pt", "loss.jsonl"


@dataclass
class Run:
    """A loaded pretrained model: network (eval mode), diffusion process, configs and a weights hash."""

    path: Path
    model: UNetModel
    diffusion: GaussianDiffusion
    unet_config: UNetConfig
    diffusion_config: DiffusionConfig
    meta: dict[str, Any]
    weights_hash: str

    @property
    def image_size(self) -> int:
        return self.unet_config.image_size


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """Read and validate RUN/config.json (clear errors for missing files or newer formats)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: not a run directory (missing {CONFIG_FILE})")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from None
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {version} is newer than this DiffSeg Studio understands "
                              f"({FORMAT_VERSION}); upgrade DiffSeg Studio to use this run")
    for key in ("unet", "diffusion"):
        if key not in meta:
            raise CheckpointError(f"{path}: missing {key!r} section")
    return meta


def write_run_config(run_dir: str | Path, meta: dict[str, Any]) -> None:
    """Write RUN/config.json atomically with the current format version."""
    write_json_atomic(Path(run_dir) / CONFIG_FILE, {"format_version": FORMAT_VERSION, **meta})


def load_run(path: str | Path, device: str | torch.device = "cpu", schedule: str = "linear",
             num_timesteps: int = 1000, **flags: Any) -> Run:
    """Load a run directory, or a guided-diffusion `.pt` (flags inferred from weights, `flags` override)."""
    path = Path(path)
    if path.is_dir():
        meta = read_run_config(path)
        try:
            ucfg = UNetConfig.from_dict(meta["unet"])
            dcfg = DiffusionConfig.from_dict(meta["diffusion"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path / CONFIG_FILE}: bad config: {e}") from None
        weights = path / EMA_FILE
        if not weights.is_file():
            raise CheckpointError(f"{path}: run directory has no weights ({EMA_FILE} missing)")
        digest = file_sha256(weights)
        if meta.get("ema_sha256") not in (None, digest):
            raise CheckpointError(f"{weights}: does not match {CONFIG_FILE} (it was written by another save: a save "
                                  f"was cut short or two processes wrote this run); `pretrain --resume --out {path}` "
                                  f"rewrites both from {STATE_FILE}")
        model = load_unet(weights, ucfg)
    elif path.is_file():
        model = load_unet(path, None, **flags)
        ucfg = model.config
        dcfg = DiffusionConfig(num_timesteps=num_timesteps, schedule=schedule, learn_sigma=ucfg.learn_sigma)
        meta = {"preset": "guided-diffusion", "unet": ucfg.to_dict(), "diffusion": dcfg.to_dict(), "step": None}
        weights, digest = path, file_sha256(path)
    else:
        raise CheckpointError(f"{path}: no such run directory or checkpoint file")
    if ucfg.learn_sigma != dcfg.learn_sigma:
        raise CheckpointError(f"{path}: UNet output channels ({ucfg.out_channels}) disagree with learn_sigma={dcfg.learn_sigma}")
    diffusion = GaussianDiffusion.from_config(dcfg.schedule, dcfg.num_timesteps, dcfg.learn_sigma)
    return Run(path, model.to(device), diffusion, ucfg, dcfg, meta, model_hash(weights, ucfg, digest))


def model_hash(weights: Path, ucfg: UNetConfig, digest: str | None = None) -> str:
    """Identity of a loaded network: its weight file's hash (`digest` when already computed), plus the
    architecture when it is not the reference's 32-group norm (the same weights under other groups compute
    other features)."""
    digest = digest or file_sha256(weights)
    if ucfg.norm_groups == 32:  # unchanged for every run and guided-diffusion file made before norm_groups
        return digest
    return hashlib.sha256(f"{digest}|norm_groups={ucfg.norm_groups}".encode()).hexdigest()


EXPORT_FILES = (CONFIG_FILE, EMA_FILE, LOSS_FILE, "samples/latest.png")  # everything an export holds


def export_run(src: str | Path, dst: str | Path, half: bool = True) -> Path:
    """Copy a run for shipping: config, EMA weights (fp16 if `half`), loss log and the last sample grid.

    The export is built in a temp folder and swapped in whole: on any error (a full disk included) a
    previous export at `dst` is left exactly as it was. `dst` must not be the run itself (any spelling of
    the same folder, symlinks included) nor a folder holding other files.
    """
    src, dst = Path(src), Path(dst)
    meta = read_run_config(src)
    if _same_dir(src, dst):
        raise ValueError(f"export-run: --out {dst} is the run itself ({src}); export to another folder "
                         "(exporting in place would overwrite its float32 weights)")
    if src.resolve().is_relative_to(dst.resolve()):
        raise ValueError(f"export-run: --out {dst} contains the run {src}; export to another folder")
    sd = read_state_dict(src / EMA_FILE)  # finite, tensors only
    if half:
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    buf = io.BytesIO()
    torch.save(sd, buf)
    meta = {k: v for k, v in meta.items() if k != "format_version"}
    meta["weights_dtype"] = "float16" if half else "float32"
    meta["ema_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    config = json_text({"format_version": FORMAT_VERSION, **meta}, indent=2, what=str(dst / CONFIG_FILE))
    with atomic_directory(dst, EXPORT_FILES, "export-run --out") as tmp:
        (tmp / EMA_FILE).write_bytes(buf.getvalue())
        (tmp / CONFIG_FILE).write_text(config + "\n", encoding="utf-8")
        for name in (LOSS_FILE, "samples/latest.png"):
            if (src / name).is_file():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / name, tmp / name)
    return dst


def _same_dir(a: Path, b: Path) -> bool:
    """True when two paths name the same folder (resolved paths, symlinks, bind mounts via inode)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False
