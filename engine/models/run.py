"""Run directories: config.json + EMA weights (+ training state) of one pretrained diffusion model.

Layout of RUN/:
  config.json      {"format_version", "preset", "unet", "diffusion", "train", "data", "step", "ema_sha256"}
                   (written last; ema_sha256 names the ema.pt it belongs to, checked at load)
  ema.pt           EMA weights as a bare guided-diffusion-style state_dict (what inference uses)
  train_state.pt   model + EMA + optimiser + step, for `pretrain --resume` (not needed to use a run)
  loss.jsonl       one JSON line per logged step
  samples/         sample grids written during training
A RUN may also be a guided-diffusion `.pt` file; its flags are inferred or given.

Identity (`Run.weights_hash`, the feature-cache key and what a classifier records): scheme 2 hashes the
weight file's sha256 together with every config field that changes activations (the whole UNet config,
the diffusion schedule and T), so editing `num_timesteps` or `num_head_channels` makes a new identity.
Scheme 1 (classifiers saved before scheme 2) was the weight file's hash (plus norm_groups when not 32);
such classifiers are still checked against it (`Run.identity(1)`).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_directory, json_text, write_json_atomic
from ..diffusion import GaussianDiffusion
from ..errors import ConfigError, OutputError
from .checkpoint import CheckpointError, file_sha256, load_unet, read_state_dict
from .config import DiffusionConfig, UNetConfig
from .unet import UNetModel
from ..validation import check_format_version, read_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: Current identity scheme (see the module docstring); classifiers record the scheme they were checked with.
IDENTITY_SCHEME = 2
#: Diffusion fields that change activations (the loss only changes training).
ACTIVATION_DIFFUSION_FIELDS = ("num_timesteps", "schedule", "learn_sigma")
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
    weights_hash: str  # identity under IDENTITY_SCHEME: weights + activation config
    weights_sha256: str = ""  # the weight file's own hash

    @property
    def image_size(self) -> int:
        return self.unet_config.image_size

    @property
    def device(self) -> torch.device:
        """Where the network (and everything computed with it) lives."""
        return next(self.model.parameters()).device

    def activation_config(self) -> dict[str, Any]:
        """The config fields that change activations, as hashed into the identity."""
        return activation_config(self.unet_config, self.diffusion_config)

    def identity(self, scheme: int = IDENTITY_SCHEME) -> str:
        """The run's identity under `scheme` (1: weights only, as recorded by older classifiers)."""
        if scheme == 1:
            return legacy_model_hash(self.weights_sha256, self.unet_config)
        if scheme == 2:
            return self.weights_hash
        raise CheckpointError(f"unknown run identity scheme {scheme}; upgrade DiffSeg Studio")


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """Read and validate RUN/config.json: UTF-8 JSON, an integer format_version, strict unet and diffusion
    sections (one-line errors naming the file and the field)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: not a run directory (missing {CONFIG_FILE})")
    meta = read_json(path, CheckpointError)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    check_format_version(meta, FORMAT_VERSION, path, CheckpointError)
    for key in ("unet", "diffusion"):
        if key not in meta:
            raise CheckpointError(f"{path}: missing {key!r} section")
    try:  # (the "train" section is only needed, and read strictly, by `pretrain --resume`)
        UNetConfig.from_dict(meta["unet"], str(path))
        DiffusionConfig.from_dict(meta["diffusion"], str(path))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    return meta


def write_run_config(run_dir: str | Path, meta: dict[str, Any]) -> None:
    """Write RUN/config.json atomically with the current format version."""
    write_json_atomic(Path(run_dir) / CONFIG_FILE, {"format_version": FORMAT_VERSION, **meta})


def load_run(path: str | Path, device: str | torch.device, schedule: str = "linear",
             num_timesteps: int = 1000, **flags: Any) -> Run:
    """Load a run directory, or a guided-diffusion `.pt` (flags inferred from weights, `flags` override)."""
    path = Path(path)
    if path.is_dir():
        meta = read_run_config(path)
        ucfg = UNetConfig.from_dict(meta["unet"], str(path / CONFIG_FILE))
        dcfg = DiffusionConfig.from_dict(meta["diffusion"], str(path / CONFIG_FILE))
        weights = path / EMA_FILE
        if not weights.is_file():
            raise CheckpointError(f"{path}: run directory has no weights ({EMA_FILE} missing)")
        model = load_unet(weights, ucfg)  # what is wrong with the file itself is reported first
        digest = file_sha256(weights)
        if meta.get("ema_sha256") not in (None, digest):
            raise CheckpointError(f"{weights}: does not match {CONFIG_FILE} (it was written by another save: a save "
                                  f"was cut short or two processes wrote this run); `pretrain --resume --out {path}` "
                                  f"rewrites both from {STATE_FILE}")
    elif path.is_file():
        model = load_unet(path, None, **flags)
        ucfg = model.config
        dcfg = DiffusionConfig(num_timesteps=num_timesteps, schedule=schedule, learn_sigma=ucfg.learn_sigma)
        problem = dcfg.problem()
        if problem:
            raise ConfigError(f"{path}: diffusion flags: {problem}")
        meta = {"preset": "guided-diffusion", "unet": ucfg.to_dict(), "diffusion": dcfg.to_dict(), "step": None}
        weights, digest = path, file_sha256(path)
    else:
        raise CheckpointError(f"{path}: no such run directory or checkpoint file")
    if ucfg.learn_sigma != dcfg.learn_sigma:
        raise CheckpointError(f"{path}: UNet output channels ({ucfg.out_channels}) disagree with learn_sigma={dcfg.learn_sigma}")
    diffusion = GaussianDiffusion.from_config(dcfg.schedule, dcfg.num_timesteps, dcfg.learn_sigma)
    return Run(path, model.to(device), diffusion, ucfg, dcfg, meta, run_identity(digest, ucfg, dcfg), digest)


def activation_config(ucfg: UNetConfig, dcfg: DiffusionConfig) -> dict[str, Any]:
    """Every config field that changes a run's activations: the UNet's (all of them) and the noise process's."""
    d = dcfg.to_dict()
    return {"unet": ucfg.to_dict(), "diffusion": {k: d[k] for k in ACTIVATION_DIFFUSION_FIELDS}}


def run_identity(weights_sha256: str, ucfg: UNetConfig, dcfg: DiffusionConfig) -> str:
    """Identity scheme 2: sha256 over the weights' hash and the canonical JSON of the activation config."""
    blob = json.dumps({"scheme": IDENTITY_SCHEME, "weights": weights_sha256, "config": activation_config(ucfg, dcfg)},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def legacy_model_hash(weights_sha256: str, ucfg: UNetConfig) -> str:
    """Identity scheme 1 (classifiers saved before scheme 2): the weight file's hash, plus the norm groups
    when not the reference's 32. It ignores the rest of the config, which is why scheme 2 exists."""
    if ucfg.norm_groups == 32:
        return weights_sha256
    return hashlib.sha256(f"{weights_sha256}|norm_groups={ucfg.norm_groups}".encode()).hexdigest()



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
        raise OutputError(f"export-run: --out {dst} is the run itself ({src}); export to another folder "
                         "(exporting in place would overwrite its float32 weights)")
    if src.resolve().is_relative_to(dst.resolve()):
        raise OutputError(f"export-run: --out {dst} contains the run {src}; export to another folder")
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
