"""Tune's live preview: a recipe (timesteps × decoder blocks) scored in well under a second on cached features.

What a recipe change costs here, and why it is small:
- the labelled train pixels are drawn ONCE (seeded, independent of the recipe), and each (t, block)'s features
  at those pixels are gathered once and kept, so a new recipe only concatenates columns it already has;
- the head is closed-form shrinkage LDA (engine/segmentation/preview_head.py): every fold of the k-fold cross-validation
  comes from one pass of sufficient statistics (all rows minus the held-out frames' rows), no iterations;
- whole frames are predicted with the factorised head (only C logit channels are upsampled).
The score is honest: by default out-of-fold over the TRAIN frames (each frame predicted by the head that did
not see it, one confusion matrix over all of them, as engine/scoring/cv.py scores the sweep); "test" scoring (the
first test frames) exists for reporting only and never feeds a choice.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from ..segmentation.classifier_training import labelled_pixels
from ..scoring.cv import kfold_indices
from ..errors import UserError
from ..segmentation.features import FeatureSpec
from ..scoring.metrics import ConfusionMatrix, summarize
from ..segmentation.pixel_classifier import PixelGatherer
from ..segmentation.preview_head import LdaStats, LinearHead, PreviewConfig, lda_head

log = logging.getLogger(__name__)

SCORINGS = ("cv", "test")


class MapBank(Protocol):
    """What the preview needs from explore.FeatureBank: stems, masks and stacked native maps per split."""

    stems: dict[str, list[str]]
    masks: dict[str, torch.Tensor]

    def maps(self, split: str, steps: Sequence[int], blocks: Sequence[int]) -> list[torch.Tensor]: ...


def gather_rows(maps: torch.Tensor, pix: torch.Tensor, out_hw: tuple[int, ...]) -> torch.Tensor:
    """(P, C) float32 features of pixels pix = [image, row, col] of one stacked map (N, C, h, w): PixelGatherer's
    bilinear rule and arithmetic, read from a channels-last copy so each neighbour is one contiguous row (the
    channels-first gather of a whole map's channels is ~8× slower; the copy is one map of the bank, small)."""
    n, c, h, w = maps.shape
    (y0, y1, wy0, wy1), (x0, x1, wx0, wx1) = PixelGatherer([maps[:1]], out_hw).tables[0]
    flat = maps.permute(0, 2, 3, 1).reshape(n * h * w, c)
    img, y, x = pix[:, 0], pix[:, 1], pix[:, 2]

    def at(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return flat[(img * h + a) * w + b].float()

    a0, a1, b0, b1 = y0[y], y1[y], x0[x], x1[x]
    ly0, ly1, lx0, lx1 = wy0[y][:, None], wy1[y][:, None], wx0[x][:, None], wx1[x][:, None]
    top = lx0 * at(a0, b0) + lx1 * at(a0, b1)
    bottom = lx0 * at(a1, b0) + lx1 * at(a1, b1)
    return ly0 * top + ly1 * bottom


class LivePreview:
    """The preview of one feature bank: a fixed seeded pixel draw from the train frames, gathered columns per
    (t, block) kept between recipes, fold assignment fixed by the seed."""

    def __init__(self, bank: MapBank, num_classes: int, class_names: list[str], cfg: PreviewConfig = PreviewConfig()):
        self.bank, self.cfg, self.num_classes, self.class_names = bank, cfg, num_classes, class_names
        masks = bank.masks["train"]
        pix = labelled_pixels(masks, num_classes)
        if len(pix) == 0:
            raise UserError("no labelled pixels in the train frames to fit the preview on")
        if len(pix) > cfg.max_pixels:
            g = torch.Generator().manual_seed(cfg.seed)
            pix = pix[torch.randperm(len(pix), generator=g)[: cfg.max_pixels]]
        self.pix = pix
        self.labels = masks[pix[:, 0], pix[:, 1], pix[:, 2]].long()
        self.out_hw = tuple(masks.shape[-2:])
        self.folds = kfold_indices(len(masks), cfg.folds, cfg.seed)
        self._columns: dict[tuple[int, int], torch.Tensor] = {}

    def columns(self, steps: Sequence[int], blocks: Sequence[int]) -> torch.Tensor:
        """(P, D) features of the drawn pixels for a recipe (t-major, then block); new pairs are gathered once."""
        keys = [(int(t), int(b)) for t in steps for b in blocks]
        missing = [k for k in keys if k not in self._columns]
        if missing:
            m_steps = sorted({t for t, _ in missing})
            m_blocks = sorted({b for _, b in missing})
            maps = self.bank.maps("train", m_steps, m_blocks)
            for key, m in zip([(t, b) for t in m_steps for b in m_blocks], maps):
                if key not in self._columns:
                    self._columns[key] = gather_rows(m, self.pix, self.out_hw)
        return torch.cat([self._columns[k] for k in keys], dim=1)

    def heads(self, steps: Sequence[int], blocks: Sequence[int]) -> tuple[LinearHead, list[LinearHead]]:
        """The head on every drawn pixel and one head per fold (fitted without that fold's frames)."""
        x = self.columns(steps, blocks)
        shift = x.mean(0)  # conditioning only: LDA's statistics are shift-invariant, so it cancels exactly
        xc = x - shift
        frame = self.pix[:, 0].numpy()
        fold_stats = []
        for _, val in self.folds:
            rows = torch.from_numpy(np.isin(frame, val))
            fold_stats.append(LdaStats.of(xc[rows], self.labels[rows], self.num_classes))
        total = fold_stats[0]
        for s in fold_stats[1:]:
            total = LdaStats(total.counts + s.counts, total.sums + s.sums, total.gram + s.gram)
        shrink = self.cfg.shrinkage
        return lda_head(total, shift, shrink), [lda_head(total - s, shift, shrink) for s in fold_stats]

    def score(self, steps: Sequence[int], blocks: Sequence[int], scoring: str = "cv") -> tuple[LinearHead, dict[str, Any]]:
        """Fit and score a recipe: out-of-fold on the train frames ("cv") or, for reporting only, on the bank's
        test frames ("test"). Returns the head fitted on every drawn pixel and the metrics dict."""
        if scoring not in SCORINGS:
            raise ValueError(f"unknown scoring {scoring!r}; choose one of {', '.join(SCORINGS)}")
        spec = FeatureSpec(tuple(int(s) for s in steps), tuple(int(b) for b in blocks))  # rejects duplicates
        head, fold_heads = self.heads(spec.steps, spec.block_list)
        split = "train" if scoring == "cv" else "test"
        stems, masks = self.bank.stems[split], self.bank.masks[split]
        maps = self.bank.maps(split, spec.steps, spec.block_list)
        which = [head] * len(stems)
        if scoring == "cv":
            for f, (_, val) in enumerate(self.folds):
                for i in val.tolist():
                    which[i] = fold_heads[f]
        cm, preds, unc, rows = ConfusionMatrix(self.num_classes), [], {}, []
        fold_cms = [ConfusionMatrix(self.num_classes) for _ in self.folds]
        fold_of = {i: f for f, (_, val) in enumerate(self.folds) for i in val.tolist()}
        for i, stem in enumerate(stems):
            logits = which[i].logits_maps([m[i] for m in maps], self.out_hw)
            labels = logits.argmax(0).numpy().astype(np.uint8)
            p = logits.softmax(0)
            ent = (-(p * p.clamp_min(1e-12).log()).sum(0)).flatten()
            truth = masks[i].numpy()
            cm.update(labels, truth)
            if scoring == "cv":
                fold_cms[fold_of[i]].update(labels, truth)
            preds.append(labels)
            unc[stem] = float(ent.topk(max(1, ent.numel() // 10)).values.mean())
            rows.append({"frame": stem, "mIoU": summarize(ConfusionMatrix(self.num_classes).update(labels, truth),
                                                          self.class_names)["miou"], "uncertainty": unc[stem]})
        result = summarize(cm, self.class_names)
        n_pix, n_train = int(len(self.pix)), len(self.bank.stems["train"])
        result.update({"split": "cv" if scoring == "cv" else "test", "n_images": len(stems), "uncertainty": unc,
                       "spec": spec.to_dict(), "_stems": list(stems), "_predictions": preds, "per_frame": rows,
                       "head": self.cfg.describe(n_pix, n_train), "n_pixels": n_pix, "n_train_frames": n_train})
        if scoring == "cv":
            result["cv"] = {"folds": len(self.folds), "seed": self.cfg.seed, "n_frames": len(stems),
                            "fold_miou": [summarize(c, self.class_names)["miou"] for c in fold_cms]}
            result["scored_on"] = f"{len(self.folds)}-fold cross-validation over {len(stems)} train frames"
        else:
            result["scored_on"] = f"the first {len(stems)} test frames (reporting only)"
        result["describe"] = (f"{self.cfg.describe(n_pix, result['n_train_frames'])}, scored by "
                              f"{result['scored_on']}")
        return head, result
