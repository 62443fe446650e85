"""DDPM pretraining on the unlabelled pool: AdamW, EMA, flips, atomic checkpoints, exact resume, DDP.

Every random choice of step s (batch indices, timesteps, noise, flips, dropout) comes from a generator
seeded by (seed, s), so a resumed run repeats the uninterrupted one bit for bit. Under torchrun each rank
takes its slice of the global batch (data sharded by rank); gradients are averaged by DDP; rank 0 writes.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..artefacts import RUN, check_output_dir
from ..atomic import torch_save_atomic, write_bytes_atomic, write_json_atomic, write_text_atomic
from ..data.folder import open_dataset
from ..data.transforms import fit_square
from ..diffusion import GaussianDiffusion, make_sampler
from ..diffusion.samplers import DEFAULT_SAMPLER, to_uint8
from ..diffusion.weighting import min_snr_weights
from ..errors import ConfigError, DataError, UserError
from ..models.checkpoint import CheckpointError, check_finite
from ..models.config import DiffusionConfig, Preset, TrainConfig, UNetConfig
from ..models.unet import UNetModel
from ..output_lock import OutputBusy, OutputLock
from ..progress import progress_printer
from ..models.run import EMA_FILE, LOSS_FILE, STATE_FILE, read_run_config, write_run_config
from .ema import EMA
from .grid import save_image_grid
from .pools import POOLS

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group if launched by torchrun (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


def load_pool(data_dir: str | Path, size: int, split: str = "unlabeled", include_test: bool = False) -> torch.Tensor:
    """All pool images (`split`: one of POOLS; masks unused) fitted to size×size, kept as uint8 (N,3,S,S).

    The test split is never part of a pool unless `include_test` (the study's protocol, an explicit choice
    that the run records): pretraining on test frames lets them shape the features they are scored with.
    """
    if split not in POOLS:
        raise UserError(f"--pool: unknown pool {split!r}; choose one of {list(POOLS)}")
    ds = open_dataset(data_dir)
    stems = list(dict.fromkeys(s for part in split.split("+") for s in ds.stems(part)))
    test = set(ds.stems("test"))
    leaked = [s for s in stems if s in test]
    if leaked:  # FolderDataset refuses such split files; a guard for other data set kinds
        raise DataError(f"{data_dir}: test stems {leaked[:5]} are in the {split!r} pool")
    if include_test:
        log.warning("pretraining on the %d test frames too (--include-test-frames): recorded in config.json",
                    len(test))
        stems += [s for s in ds.stems("test") if s not in set(stems)]
    if not stems:
        hint = " (use --pool train to pretrain on the labelled training frames' images)" \
            if split == "unlabeled" and ds.stems("train") else ""
        raise DataError(f"{data_dir}: the {split!r} pool is empty; nothing to pretrain on{hint}")
    out = torch.empty((len(stems), 3, size, size), dtype=torch.uint8)
    for i, stem in enumerate(stems):
        img = fit_square(ds.image(stem), size)
        out[i] = torch.from_numpy(np.round(img * 255).astype(np.uint8)).permute(2, 0, 1)
    return out


class StopRequested(Exception):
    """Raised inside the loop when SIGTERM/SIGINT asks the run to checkpoint and stop."""


class NonFiniteTraining(UserError):
    """The loss or the weights became NaN/Infinity: training stops, the last good checkpoint stays."""


def _diverged_message(out: Path, step: int, what: str, lr: float, last_saved: int | None) -> str:
    kept = (f"the last good checkpoint (step {last_saved}) in {out} is kept" if last_saved
            else "no checkpoint was written")
    return (f"pretrain: training diverged at step {step}: {what}; stopped without saving it ({kept}); "
            f"lower --lr (now {lr:g})")


def _check_weights_finite(out: Path, model: UNetModel, ema: EMA, step: int, lr: float,
                          last_saved: int | None) -> None:
    """Never write a checkpoint whose weights hold NaN/Infinity (a finite loss can still blow them up)."""
    for prefix, sd in (("model", model.state_dict()), ("ema", ema.state_dict())):
        for key, value in sd.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise NonFiniteTraining(_diverged_message(out, step, f"{prefix} weight {key!r} is not finite",
                                                          lr, last_saved))


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def make_batch(pool: torch.Tensor, seed: int, step: int, batch: int, world: int, rank: int,
               num_timesteps: int, hflip: bool, vflip: bool,
               offset_noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The deterministic batch of step `step` for `rank`: (x0 in [-1,1], t, noise).

    offset_noise > 0 adds a per-image, per-channel constant (drawn after everything else, so runs without
    it keep their exact random stream) to the noise: the model must then learn whole-frame colour shifts."""
    g = _step_generator(seed, step)
    total = batch * world
    idx = torch.randint(0, len(pool), (total,), generator=g)
    t = torch.randint(0, num_timesteps, (total,), generator=g)
    flips = torch.rand((total, 2), generator=g)
    noise = torch.randn((total, *pool.shape[1:]), generator=g)
    if offset_noise > 0:
        noise = noise + offset_noise * torch.randn((total, pool.shape[1], 1, 1), generator=g)
    sl = slice(rank * batch, (rank + 1) * batch)
    x = pool[idx[sl]].float() / 127.5 - 1.0
    f = flips[sl]
    if hflip:
        x = torch.where((f[:, 0] < 0.5)[:, None, None, None], x.flip(-1), x)
    if vflip:
        x = torch.where((f[:, 1] < 0.5)[:, None, None, None], x.flip(-2), x)
    return x, t[sl], noise[sl]


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines after `step` so a resumed run's log stays continuous (no duplicates, no gaps)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError):
            continue  # a line cut by a kill
    write_text_atomic(path, "".join(k + "\n" for k in keep))  # a kill here must not lose the log


def pool_digest(pool: torch.Tensor) -> str:
    """Content hash of a pool tensor: a resumed run must see the same images, wherever they now live."""
    h = hashlib.sha256(str(tuple(pool.shape)).encode())
    h.update(pool.contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def pretrain(data_dir: str | Path, preset: Preset, out_dir: str | Path, resume: bool = False, *,
             device: str | torch.device, progress_bar: bool = True, sample_n: int = 16,
             pool_split: str = "unlabeled", include_test: bool = False, init_from: str | Path | None = None
             ) -> dict[str, Any]:
    """Train (or resume) a run on the `pool_split` images on `device`; returns {"step", "loss", "seconds"}.

    `init_from`: start from another run's (EMA) weights instead of a random init — fine-tuning with other
    settings, e.g. a colour-cast remedy; the UNet configs must match, the optimiser starts fresh, and the
    source is recorded in config.json (`init_from`: path and weights hash). Not with `resume`.

    A resume must use the settings the run was trained with (refused otherwise, naming each field);
    only the schedule fields (RESUME_MAY_CHANGE) may change, and config.json records every change.
    Writes RUN/progress.json ({"step", "max_steps", "loss", "steps_per_s", "status": running|stopped|done})
    at every logged step, and a sample grid every `sample_every` steps and at the last step.
    Stops cleanly (checkpoint first) on SIGINT/SIGTERM."""
    out = Path(out_dir)
    dev = torch.device(device)
    info = init_distributed(dev)
    if not resume and not (out / STATE_FILE).exists():
        check_output_dir(out, RUN)  # never write a run into a data set, a classifier or a foreign folder
    lock, busy = None, None
    if info.is_main:  # one writer per run directory
        try:
            lock = OutputLock(out).acquire()
        except OutputBusy as e:
            busy = e
    if info.world > 1:  # every rank stops when rank 0 could not lock, so none waits on a collective
        flag = torch.tensor([int(busy is not None)], device=dev)
        dist.broadcast(flag, 0)
        if int(flag.item()) and busy is None:
            busy = OutputBusy(f"{out} is in use by another process")
    if busy is not None:
        raise busy
    try:
        return _pretrain(data_dir, preset, out, resume, dev, info, progress_bar, sample_n, pool_split, include_test,
                         init_from)
    finally:
        if lock is not None:
            lock.release()


def _pretrain(data_dir: str | Path, preset: Preset, out: Path, resume: bool, dev: torch.device, info: DistInfo,
              progress_bar: bool, sample_n: int, pool_split: str, include_test: bool,
              init_from: str | Path | None = None) -> dict[str, Any]:
    tc, ucfg, dcfg = preset.train, preset.unet, preset.diffusion
    torch.manual_seed(tc.seed)
    model = UNetModel(ucfg).to(dev)
    source = _init_weights(model, init_from, preset) if init_from is not None and not resume else None
    ema = EMA(model, tc.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    step = 0
    if not resume and (out / STATE_FILE).exists():  # every rank raises, so none waits forever on a collective
        raise FileExistsError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    diffusion = GaussianDiffusion.from_config(dcfg.schedule, dcfg.num_timesteps, dcfg.learn_sigma, dcfg.loss)
    pool = load_pool(data_dir, ucfg.image_size, pool_split, include_test)
    meta = {"preset": preset.name, "unet": ucfg.to_dict(), "diffusion": dcfg.to_dict(), "train": tc.to_dict(),
            "data": str(data_dir), "pool": pool_split, "pool_includes_test": include_test, "pool_size": len(pool),
            "pool_digest": pool_digest(pool), "world_size": info.world}
    if source is not None:
        meta["init_from"] = source
    if resume:
        meta["resumes"] = check_resume(out, preset, meta)
        if "init_from" in read_run_config(out):  # a fine-tune stays one when resumed
            meta["init_from"] = read_run_config(out)["init_from"]
        step = _load_state(out, model, ema, opt)
        meta["resumes"][-1]["at_step"] = step  # type: ignore[index]  # the list check_resume returned
    net: torch.nn.Module = DistributedDataParallel(model) if info.world > 1 else model
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_log(out / LOSS_FILE, step)
        _remove_stale_temp_files(out)

    stop = {"flag": False}

    def request_stop(signum: int, _frame: Any) -> None:
        stop["flag"] = True

    old_handlers = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    bar, plain = None, None
    if progress_bar and info.is_main:
        if sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=tc.max_steps, initial=step, desc="pretrain", unit="step", dynamic_ncols=True)
        else:  # a log file: periodic plain lines, not one endless \r line
            plain = progress_printer()
    t0, last_t, last_step = time.time(), time.time(), step
    loss_val: float | None = None  # None until a step has run (NaN is not JSON)
    last_saved = step if resume else None
    try:
        while step < tc.max_steps:
            x0, t, noise = make_batch(pool, tc.seed, step, tc.batch_size, info.world, info.rank,
                                      dcfg.num_timesteps, tc.hflip, tc.vflip, tc.offset_noise)
            torch.manual_seed(tc.seed * 7_919 + step)  # dropout
            per_example = diffusion.training_losses(net, x0.to(dev), t.to(dev), noise.to(dev))
            if tc.min_snr_gamma > 0:
                per_example = per_example * min_snr_weights(diffusion, t.to(dev), tc.min_snr_gamma)
            loss = per_example.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            reduced = loss.detach().clone()
            if info.world > 1:  # log the global batch's loss, not rank 0's slice of it
                dist.all_reduce(reduced)
                reduced /= info.world
            loss_val = reduced.item()
            if not math.isfinite(loss_val):  # every rank sees the same reduced value, so all stop together
                raise NonFiniteTraining(_diverged_message(out, step + 1, f"the loss is {loss_val}", tc.lr, last_saved))
            opt.step()
            ema.update(model)
            step += 1
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_val:.4f}")
            elif plain:
                plain(step, tc.max_steps, f"pretrain step {step}/{tc.max_steps} loss {loss_val:.4f}")
            if info.is_main and (step % tc.log_every == 0 or step == tc.max_steps):
                now = time.time()
                rate = (step - last_step) / max(now - last_t, 1e-9)
                last_t, last_step = now, step
                with open(out / LOSS_FILE, "a") as f:
                    f.write(json.dumps({"step": step, "loss": round(loss_val, 6), "steps_per_s": round(rate, 4),
                                        "time": round(now, 3)}) + "\n")
                write_json_atomic(out / "progress.json", {"step": step, "max_steps": tc.max_steps, "loss": loss_val,
                                                          "steps_per_s": rate, "status": "running"})
            if step % tc.save_every == 0 or step == tc.max_steps:
                _check_weights_finite(out, model, ema, step, tc.lr, last_saved)
                _save_state(out, model, ema, opt, step, meta, info)
                last_saved = step
            if info.is_main and tc.sample_every and (step % tc.sample_every == 0 or step == tc.max_steps):
                save_samples(ema.shadow_model(model), diffusion, out / "samples", step, sample_n, dev)
            if stop["flag"]:
                raise StopRequested
    except NonFiniteTraining:
        if info.is_main:
            write_json_atomic(out / "progress.json", {"step": last_saved or 0, "max_steps": tc.max_steps,
                                                      "loss": None, "status": "failed"})
        raise
    except (KeyboardInterrupt, StopRequested):
        log.warning("stop requested at step %d: writing checkpoint", step)
        _check_weights_finite(out, model, ema, step, tc.lr, last_saved)
        _save_state(out, model, ema, opt, step, meta, info)
        if info.is_main:
            write_json_atomic(out / "progress.json", {"step": step, "max_steps": tc.max_steps, "loss": loss_val,
                                                      "status": "stopped"})
        raise KeyboardInterrupt from None
    finally:
        if bar:
            bar.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    if info.is_main:
        write_json_atomic(out / "progress.json", {"step": step, "max_steps": tc.max_steps, "loss": loss_val,
                                                  "status": "done"})
    dump_dir = os.environ.get("DIFFSEG_DUMP_RANK_WEIGHTS")
    if dump_dir:  # testing hook: every rank saves what it holds, to check that DDP ranks agree
        Path(dump_dir).mkdir(parents=True, exist_ok=True)
        torch.save({"step": step, "model": model.state_dict(), "ema": ema.state_dict()},
                   Path(dump_dir) / f"rank{info.rank}.pt")
    return {"step": step, "loss": loss_val, "seconds": time.time() - t0}


#: how the training-time sample grids are drawn (a fixed seed makes grids comparable across steps)
GRID_SAMPLER, GRID_STEPS, GRID_SEED = DEFAULT_SAMPLER, 25, 1234


def save_samples(model: torch.nn.Module, diffusion: GaussianDiffusion, folder: Path, step: int, n: int,
                 device: torch.device, sampler: str = GRID_SAMPLER, steps: int = GRID_STEPS,
                 seed: int = GRID_SEED) -> Path:
    """A sample grid of the EMA model: samples/step_XXXXXXX.png and samples/latest.png."""
    size: int = model.config.image_size  # type: ignore[union-attr,assignment]  # a UNetModel (or its EMA copy)
    g = torch.Generator().manual_seed(seed)
    x = make_sampler(sampler, diffusion, steps).sample(model.eval(), (n, 3, size, size), g, device)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:07d}.png"
    save_image_grid(to_uint8(x), path)
    save_image_grid(to_uint8(x), folder / "latest.png")
    return path


def _remove_stale_temp_files(out: Path) -> None:
    """Delete temp files of atomic writes cut short by a kill (`.NAME.XXXX.tmp`); finished files are untouched."""
    for path in list(out.glob(".*.tmp")) + list((out / "samples").glob(".*.tmp")):
        path.unlink(missing_ok=True)


def _save_state(out: Path, model: UNetModel, ema: EMA, opt: torch.optim.Optimizer, step: int,
                meta: dict[str, Any], info: DistInfo) -> None:
    if not info.is_main:
        return
    state = {"format_version": 1, "step": step, "model": model.state_dict(), "ema": ema.state_dict(),
             "opt": opt.state_dict()}
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    weights = buf.getvalue()
    torch_save_atomic(state, out / STATE_FILE)
    write_bytes_atomic(out / EMA_FILE, weights)
    # config.json goes last and names the weights it belongs to: a kill between the two is detected at load
    write_run_config(out, {**meta, "step": step, "ema_sha256": hashlib.sha256(weights).hexdigest()})


#: Training settings a resumed run may change: when to stop, save, sample and log. Everything else
#: (lr, batch size, seed, EMA, flips, data, pool, architecture) changes what the optimiser does or sees.
RESUME_MAY_CHANGE = ("max_steps", "save_every", "sample_every", "log_every")
_FLAGS = {"lr": "--lr", "batch_size": "--batch-size", "seed": "--seed", "data": "--data", "pool": "--pool",
          "pool_includes_test": "--include-test-frames"}


def check_resume(out: Path, preset: Preset, now: dict[str, Any]) -> list[dict[str, Any]]:
    """Refuse a resume whose settings differ from the run's (naming each field); returns the resume history
    with this resume appended (what changed among RESUME_MAY_CHANGE)."""
    if not (out / STATE_FILE).is_file():
        raise CheckpointError(f"{out}: nothing to resume ({STATE_FILE} missing)")
    cfg_path = out / "config.json"
    then = read_run_config(out)
    try:
        saved_unet = UNetConfig.from_dict(then.get("unet"), str(cfg_path))
    except ConfigError:
        saved_unet = None
    if saved_unet != preset.unet:
        if saved_unet is None:
            diff = "unreadable UNet config"
        else:
            a, b = preset.unet.to_dict(), saved_unet.to_dict()
            diff = ", ".join(f"{k} {b[k]} → {a[k]}" for k in a if a[k] != b[k])
        raise CheckpointError(f"{out}: --resume with preset {preset.name!r} but the run was trained with "
                              f"preset {then.get('preset')!r} and a different UNet ({diff}); use the same "
                              f"preset, or start a new run")
    diffs: list[str] = []
    saved_diff = DiffusionConfig.from_dict(then.get("diffusion"), str(cfg_path)).to_dict()
    diffs += [f"diffusion.{k} {saved_diff[k]} → {v}" for k, v in now["diffusion"].items() if saved_diff.get(k) != v]
    saved_train = TrainConfig.from_dict(then["train"], str(cfg_path)).to_dict() if "train" in then else {}
    changed = {}
    for k, v in now["train"].items():
        if k in saved_train and saved_train[k] != v:
            if k in RESUME_MAY_CHANGE:
                changed[k] = [saved_train[k], v]
            else:
                diffs.append(f"{k} {saved_train[k]} → {v}" + (f" ({_FLAGS[k]})" if k in _FLAGS else ""))
    if then.get("pool_digest") is not None:
        if then["pool_digest"] != now["pool_digest"]:
            diffs.append(f"data: the pool images differ from those the run was trained on "
                         f"({then.get('data')!r} → {now['data']!r}, {then.get('pool_size')} → {now['pool_size']} images; --data)")
    elif "data" in then and Path(str(then["data"])).resolve() != Path(now["data"]).resolve():
        diffs.append(f"data {then['data']!r} → {now['data']!r} (--data)")
    for k in ("pool", "pool_includes_test"):
        saved = then.get(k, "unlabeled" if k == "pool" else False)
        if saved != now[k]:
            diffs.append(f"{k} {saved!r} → {now[k]!r} ({_FLAGS[k]})")
    if diffs:
        raise ConfigError(f"{out}: --resume with settings that differ from the run's: {'; '.join(diffs)}. A resumed "
                          f"run continues what it was trained with (only {', '.join(RESUME_MAY_CHANGE)} may "
                          "change); start a new run to use other settings")
    recorded = then.get("resumes")
    history: list[Any] = recorded if isinstance(recorded, list) else []
    return [*history, {"at_step": None, "changed": changed}]


def _init_weights(model: UNetModel, init_from: str | Path, preset: Preset) -> dict[str, str]:
    """Load another run's EMA weights into `model` (before the EMA copies it); what config.json records."""
    from ..models.run import load_run

    src = load_run(init_from, "cpu")
    if src.model.config != preset.unet:
        a, b = preset.unet.to_dict(), src.model.config.to_dict()
        diff = ", ".join(f"{k} {b[k]} → {a[k]}" for k in a if a.get(k) != b.get(k))
        raise ConfigError(f"--init-from {init_from}: that run's UNet differs from preset {preset.name!r} ({diff}); "
                          "fine-tune with the run's own preset")
    model.load_state_dict(src.model.state_dict())
    return {"run": str(init_from), "weights_hash": src.weights_hash}


def _load_state(out: Path, model: UNetModel, ema: EMA, opt: torch.optim.Optimizer) -> int:
    path = out / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        check_finite({k: state[k] for k in ("model", "ema")}, str(path))
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure here means an unusable file
        raise CheckpointError(f"{path}: cannot resume from this training state: {str(e)[:200]}") from None
    log.info("resuming %s at step %d", out, state["step"])
    return int(state["step"])
