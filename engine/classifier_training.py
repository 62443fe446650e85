"""Fitting the pixel-classifier ensemble on labelled pixels gathered from native feature maps.

Adam (lr 1e-3) on cross-entropy, all members at once (their losses are summed, so each member's
gradients are its own). Pixels labelled 255 are ignored. A held-out pixel subset drives early
stopping per member: each member keeps its weights from its best validation epoch.
Batch size is larger than the reference's 64 pixels for throughput on CPU; epochs are capped.
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .pixel_classifier import EnsembleMLP, PixelGatherer, hidden_sizes

log = logging.getLogger(__name__)
IGNORE = 255


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
    # techniques beyond the study's recipe (engine/self_training.py; chosen by CV with `fit --recipe auto`)
    flip_tta: bool = False  # predict = ensemble over the frame and its horizontal mirror (mirrored back)
    self_train: int = 0  # >0: pseudo-label this many unlabelled pool frames with the fitted ensemble, refit
    pseudo_threshold: float = 0.9  # a pool pixel is pseudo-labelled when the ensemble's mean max prob ≥ this

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FitConfig":
        return cls(**d)


def labelled_pixels(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(P, 3) [image, row, col] of every pixel with a valid class id."""
    valid = (masks != IGNORE) & (masks >= 0) & (masks < num_classes)
    bad = masks[(masks != IGNORE) & ~valid]
    if bad.numel():
        raise ValueError(f"mask values {sorted(set(bad.unique().tolist()))[:10]} are not class ids "
                         f"0..{num_classes - 1} or 255 (ignore)")
    return valid.nonzero()


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1 over present classes (absent classes weigh 0)."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    inv = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
    return inv * (counts > 0).sum() / inv.sum().clamp_min(1e-12)


def fit_ensemble(maps: Sequence[torch.Tensor], masks: torch.Tensor, num_classes: int, cfg: FitConfig,
                 progress: Callable[[int, int, str], None] | None = None) -> tuple[EnsembleMLP, dict[str, Any]]:
    """Train an ensemble on stacked native maps (N, C_k, h_k, w_k) and masks (N, H, W); returns (model, stats)."""
    t0 = time.time()
    out_hw = tuple(masks.shape[-2:])
    gather = PixelGatherer(maps, out_hw)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(cfg.seed)
    pix = labelled_pixels(masks, num_classes)
    if len(pix) == 0:
        raise ValueError("no labelled pixels to train on (all masks empty or ignore)")
    if len(pix) > cfg.max_pixels:
        pix = pix[torch.randperm(len(pix), generator=g)[: cfg.max_pixels]]
    pix = pix[torch.randperm(len(pix), generator=g)]
    n_val = int(len(pix) * cfg.val_fraction) if cfg.val_fraction > 0 else 0
    val, train = pix[:n_val], pix[n_val:]
    labels = masks[train[:, 0], train[:, 1], train[:, 2]].long()
    weight = class_weights(labels, num_classes) if cfg.class_balanced else None

    model = EnsembleMLP(gather.dim, num_classes, hidden_sizes(cfg.arch, num_classes), cfg.members, cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    best_loss = torch.full((cfg.members,), float("inf"))
    best_state = copy.deepcopy(model.state_dict())
    stale = torch.zeros(cfg.members, dtype=torch.long)
    steps_per_epoch = max(1, -(-len(train) // cfg.batch_size))
    total, step, history = cfg.max_epochs * steps_per_epoch, 0, []
    for epoch in range(cfg.max_epochs):
        model.train()
        order = torch.randperm(len(train), generator=g)
        for s in range(steps_per_epoch):
            idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs two samples
            p = train[idx]
            logits = model(gather(p[:, 0], p[:, 1], p[:, 2]))
            y = labels[idx]
            loss = F.cross_entropy(logits.reshape(-1, num_classes), y.repeat(cfg.members), weight=weight,
                                   reduction="mean") * cfg.members
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if progress and step % 20 == 0:
                progress(step, total, f"epoch {epoch + 1}/{cfg.max_epochs} loss {loss.item() / cfg.members:.4f}")
        val_loss = _validation_loss(model, gather, val, masks, num_classes) if n_val else torch.zeros(cfg.members)
        improved = val_loss < best_loss - 1e-5
        _copy_members(best_state, model.state_dict(), improved)
        best_loss = torch.where(improved, val_loss, best_loss)
        stale = torch.where(improved, torch.zeros_like(stale), stale + 1)
        history.append({"epoch": epoch + 1, "val_loss": val_loss.mean().item()})
        log.info("epoch %d: mean val loss %.4f", epoch + 1, val_loss.mean().item())
        if n_val and bool((stale >= cfg.patience).all()):
            break
    if n_val:
        model.load_state_dict(best_state)
    model.eval()
    if progress:
        progress(total, total, "done")
    stats = {"train_pixels": len(train), "val_pixels": n_val, "epochs": len(history), "history": history,
             "val_loss_per_member": best_loss.tolist(), "train_seconds": time.time() - t0, "feature_dim": gather.dim}
    return model, stats


@torch.no_grad()
def _validation_loss(model: EnsembleMLP, gather: PixelGatherer, val: torch.Tensor, masks: torch.Tensor,
                     num_classes: int, batch: int = 4096) -> torch.Tensor:
    model.eval()
    total = torch.zeros(model.members)
    for s in range(0, len(val), batch):
        p = val[s:s + batch]
        logits = model(gather(p[:, 0], p[:, 1], p[:, 2]))
        y = masks[p[:, 0], p[:, 1], p[:, 2]].long()
        ce = F.cross_entropy(logits.permute(1, 2, 0), y[:, None].expand(-1, model.members), reduction="none")
        total += ce.sum(dim=0)
    return total / max(len(val), 1)


def _copy_members(dst: dict[str, torch.Tensor], src: dict[str, torch.Tensor], which: torch.Tensor) -> None:
    """dst[k][e] = src[k][e] for members e where `which` is true (every tensor has a leading member axis)."""
    for k, v in src.items():
        dst[k][which] = v[which].detach().clone()
