"""Fitting the pixel-classifier ensemble on labelled pixels gathered from native feature maps.

Adam (lr 1e-3) on cross-entropy, all members at once (their losses are summed, so each member's
gradients are its own). Pixels labelled 255 are ignored. A held-out pixel subset drives early
stopping per member: each member keeps its weights from its best validation epoch.
Batch size is larger than the reference's 64 pixels for throughput on CPU; epochs are capped.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..data.classes import IGNORE_INDEX
from .augmentation import MAX_COPIES
from ..errors import ConfigError, DataError, UserError
from .pixel_classifier import EnsembleMLP, PixelGatherer, hidden_sizes
from ..validation import MAX_SEED, in_range, one_of, strict_from_dict

log = logging.getLogger(__name__)


@dataclass
class FitConfig:
    """Training settings of the ensemble."""

    arch: str = "ddpm"  # 'ddpm' (D→128→32→C) or 'study' (D→256→128→32→C)
    members: int = 10
    lr: float = 1e-3
    batch_size: int = 512
    max_epochs: int = 8
    max_pixels: int = 400_000  # subsample labelled pixels beyond this (seeded) to bound time
    val_fraction: float = 0.1
    patience: int = 2
    class_balanced: bool = False
    seed: int = 0
    # techniques beyond the study's recipe (engine/segmentation/self_training.py; chosen by CV with `fit --recipe auto`)
    flip_tta: bool = False  # predict = ensemble over the frame and its horizontal mirror (mirrored back)
    self_train: int = 0  # >0: pseudo-label this many unlabelled pool frames with the fitted ensemble, refit
    pseudo_threshold: float = 0.9  # a pool pixel is pseudo-labelled when the ensemble's mean max prob ≥ this
    augment: int = 0  # >0: also fit on this many augmented copies of each labelled frame (engine/segmentation/augmentation.py)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __post_init__(self) -> None:
        if self.batch_size < 2:  # BatchNorm normalises over the batch: one pixel has no variance
            raise ConfigError(f"batch_size must be >= 2 pixels (BatchNorm needs two samples per batch), "
                              f"got {self.batch_size}")

    @classmethod
    def from_dict(cls, d: Any, source: str = "config", section: str = "fit") -> "FitConfig":
        """Strict reader: wrong types, ranges, missing or unknown keys raise one ConfigError line."""
        return strict_from_dict(cls, d, source, section=section, checks={
            "arch": one_of("ddpm", "study"), "members": in_range(1, 100), "lr": in_range(0, 10, lo_open=True),
            "batch_size": in_range(2, 65_536), "max_epochs": in_range(1, 100_000), "max_pixels": in_range(1, 10**9),
            "val_fraction": in_range(0, 0.9), "patience": in_range(1, 100_000), "seed": in_range(0, MAX_SEED),
            "self_train": in_range(0, 100_000), "pseudo_threshold": in_range(0, 1),
            "augment": in_range(0, MAX_COPIES)},
            # classifiers fitted before the techniques existed were fitted without them
            optional={"flip_tta": False, "self_train": 0, "pseudo_threshold": 0.9, "augment": 0})


def labelled_pixels(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(P, 3) [image, row, col] of every pixel with a valid class id."""
    valid = (masks != IGNORE_INDEX) & (masks >= 0) & (masks < num_classes)
    bad = masks[(masks != IGNORE_INDEX) & ~valid]
    if bad.numel():
        raise DataError(f"mask values {sorted(set(bad.unique().tolist()))[:10]} are not class ids "
                        f"0..{num_classes - 1} or {IGNORE_INDEX} (ignore)")
    return valid.nonzero()


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1 over present classes (absent classes weigh 0)."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    inv = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
    return inv * (counts > 0).sum() / inv.sum().clamp_min(1e-12)


def fit_ensemble(maps: Sequence[torch.Tensor], masks: torch.Tensor, num_classes: int, cfg: FitConfig,
                 progress: Callable[[int, int, str], None] | None = None,
                 device: str | torch.device | None = None) -> tuple[EnsembleMLP, dict[str, Any]]:
    """Train an ensemble on stacked native maps (N, C_k, h_k, w_k) and masks (N, H, W); returns (model, stats).

    The model trains on `device` (default: the maps' device); the maps stay where they are (only each
    batch of gathered pixels moves), and every random draw is made on the CPU.
    """
    t0 = time.time()
    device = torch.device(device) if device is not None else maps[0].device
    masks = masks.cpu()
    out_hw = tuple(masks.shape[-2:])
    gather = PixelGatherer(maps, out_hw)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(cfg.seed)
    pix = labelled_pixels(masks, num_classes)
    if len(pix) == 0:
        raise DataError("no labelled pixels to train on (all masks empty or ignore)")
    if len(pix) > cfg.max_pixels:
        pix = pix[torch.randperm(len(pix), generator=g)[: cfg.max_pixels]]
    pix = pix[torch.randperm(len(pix), generator=g)]
    n_val = int(len(pix) * cfg.val_fraction) if cfg.val_fraction > 0 else 0
    val, train = pix[:n_val], pix[n_val:]
    labels = masks[train[:, 0], train[:, 1], train[:, 2]].long()
    weight = class_weights(labels, num_classes).to(device) if cfg.class_balanced else None

    bounds = batch_bounds(len(train), cfg.batch_size)
    model = EnsembleMLP(gather.dim, num_classes, hidden_sizes(cfg.arch, num_classes), cfg.members, cfg.seed).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    best_loss = torch.full((cfg.members,), float("inf"))
    start_loss = _validation_loss(model, gather, val, masks, num_classes) if n_val else None
    start_params = [p.detach().clone() for p in model.parameters()]
    best_state = copy.deepcopy(model.state_dict())
    stale = torch.zeros(cfg.members, dtype=torch.long)
    steps_per_epoch = len(bounds) - 1
    total, step, history, epoch_losses = cfg.max_epochs * steps_per_epoch, 0, [], []
    for epoch in range(cfg.max_epochs):
        model.train()
        order = torch.randperm(len(train), generator=g)
        loss_sum = 0.0
        for s in range(steps_per_epoch):
            idx = order[bounds[s]:bounds[s + 1]]
            p = train[idx]
            logits = model(gather(p[:, 0], p[:, 1], p[:, 2]).to(device))
            y = labels[idx].to(device)
            loss = F.cross_entropy(logits.reshape(-1, num_classes), y.repeat(cfg.members), weight=weight,
                                   reduction="mean") * cfg.members
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += loss.item() / cfg.members * len(idx)
            if progress and step % 20 == 0:
                progress(step, total, f"epoch {epoch + 1}/{cfg.max_epochs} loss {loss.item() / cfg.members:.4f}")
        val_loss = _validation_loss(model, gather, val, masks, num_classes) if n_val else torch.zeros(cfg.members)
        improved = val_loss < best_loss - 1e-5
        _copy_members(best_state, model.state_dict(), improved)
        best_loss = torch.where(improved, val_loss, best_loss)
        stale = torch.where(improved, torch.zeros_like(stale), stale + 1)
        epoch_losses.append(loss_sum / len(train))
        history.append({"epoch": epoch + 1, "val_loss": val_loss.mean().item(), "train_loss": epoch_losses[-1]})
        log.info("epoch %d: mean val loss %.4f", epoch + 1, val_loss.mean().item())
        if n_val and bool((stale >= cfg.patience).all()):
            break
    check_learned(step, start_params, model, epoch_losses, start_loss, best_loss if n_val else None, len(train), cfg)
    if n_val:
        model.load_state_dict(best_state)
    model.eval()
    if progress:
        progress(total, total, "done")
    stats = {"train_pixels": len(train), "val_pixels": n_val, "epochs": len(history), "history": history,
             "val_loss_per_member": best_loss.tolist(), "train_seconds": time.time() - t0, "feature_dim": gather.dim}
    return model, stats


class FitError(UserError):
    """A fit that learnt nothing (no optimiser step, or a loss that never moved): its classifier would be noise."""


def batch_bounds(n: int, batch_size: int) -> list[int]:
    """Start offsets of the batches of an epoch over n pixels, plus n. A last batch of one pixel joins the one
    before it: BatchNorm cannot normalise a single sample, and dropping it would drop data."""
    if n < 2:
        raise DataError(f"only {n} labelled training pixel(s) after holding out validation pixels; need at least 2")
    if batch_size < 2:
        raise ConfigError(f"batch_size must be >= 2 pixels (BatchNorm needs two samples per batch), got {batch_size}")
    bounds = list(range(0, n, batch_size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return bounds


def check_learned(steps: int, start_params: list[torch.Tensor], model: EnsembleMLP, epoch_losses: list[float],
                  start_val: torch.Tensor | None, best_val: torch.Tensor | None, n_train: int, cfg: FitConfig) -> None:
    """Refuse a fit that learnt nothing: no optimiser step, steps that changed no weight, or a loss that
    never moved or is not finite (FitError, one line). Members that never beat their untrained validation
    loss are only logged: a weak fit on tiny data is still a result."""
    if steps == 0:
        raise FitError(f"the fit took no optimiser step ({n_train} training pixels, batch size {cfg.batch_size}, "
                       f"{cfg.max_epochs} epochs)")
    if all(torch.equal(a, b) for a, b in zip(start_params, model.parameters())):
        raise FitError(f"{steps} optimiser steps changed no weight (lr {cfg.lr}): the loss never moved and the "
                       "classifier learnt nothing")
    if not all(math.isfinite(v) for v in epoch_losses):
        raise FitError(f"the training loss became non-finite ({epoch_losses[-1]}) (lr {cfg.lr})")
    if len(epoch_losses) >= 2 and all(abs(v - epoch_losses[0]) <= 1e-9 * max(1.0, abs(epoch_losses[0]))
                                      for v in epoch_losses):
        raise FitError(f"the training loss never moved ({epoch_losses[0]:.6f} in every epoch, lr {cfg.lr})")
    if start_val is not None and best_val is not None:
        if not bool(torch.isfinite(best_val).all()):
            bad = (~torch.isfinite(best_val)).nonzero().flatten().tolist()
            raise FitError(f"the validation loss is not finite for members {bad}")
        stuck = (best_val >= start_val - 1e-6).nonzero().flatten().tolist()
        if stuck:
            log.warning("ensemble member(s) %s never beat their untrained validation loss (%.4f)", stuck,
                        start_val.mean().item())


@torch.no_grad()
def _validation_loss(model: EnsembleMLP, gather: PixelGatherer, val: torch.Tensor, masks: torch.Tensor,
                     num_classes: int, batch: int = 4096) -> torch.Tensor:
    model.eval()
    total = torch.zeros(model.members)
    for s in range(0, len(val), batch):
        p = val[s:s + batch]
        device = next(model.parameters()).device
        logits = model(gather(p[:, 0], p[:, 1], p[:, 2]).to(device))
        y = masks[p[:, 0], p[:, 1], p[:, 2]].long().to(device)
        ce = F.cross_entropy(logits.permute(1, 2, 0), y[:, None].expand(-1, model.members), reduction="none")
        total += ce.sum(dim=0).cpu()
    return total / max(len(val), 1)


def _copy_members(dst: dict[str, torch.Tensor], src: dict[str, torch.Tensor], which: torch.Tensor) -> None:
    """dst[k][e] = src[k][e] for members e where `which` is true (every tensor has a leading member axis)."""
    for k, v in src.items():
        w = which.to(v.device)
        dst[k][w] = v[w].detach().clone()
