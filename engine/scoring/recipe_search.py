"""`fit --recipe auto`: choose timesteps and decoder blocks by cross-validation on the TRAIN frames only.

Search (greedy forward selection over the sweep's cells, bounded in time):
1. score every single cell (block, t) of the candidate grid by k-fold CV (or reuse a CV sweep of the
   same checkpoint and fold settings);
2. start from the best cell; at each round try adding one candidate timestep or one of the `top_blocks`
   best blocks (ranked by their best cell) to the current steps × blocks product, score each by CV and
   keep the best if it gains at least `min_gain` mIoU;
3. stop when nothing gains, the recipe reaches `max_steps` / `max_blocks`, or `time_budget_s` is spent
   (checked before each CV fit: the best recipe found so far is returned).
Then `search_techniques` adds techniques (multi-noise, flip averaging, RGB window, class-balanced loss,
augmented copies, self-training) greedily by the same CV.
Test frames are never loaded: only `load_labelled(ds, train_split)` is called.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..segmentation.augmentation import AugmentedMaps, augment_labelled
from ..segmentation.classifier import load_labelled
from ..segmentation.classifier_training import FitConfig
from .cv import DEFAULT_FOLDS, cv_score
from ..data.folder import SegDataset
from ..segmentation.feature_cache import FeatureCache
from ..segmentation.features import FeatureExtractor, FeatureSpec
from ..models.run import Run

log = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]
SEARCH_FIT = FitConfig(members=1, max_epochs=3, max_pixels=30_000)  # the CV sweep's per-fold fit


def _select(maps: list[torch.Tensor], keys: list[tuple[int, int]], steps: Sequence[int],
            blocks: Sequence[int]) -> list[torch.Tensor]:
    """The maps of the product steps × blocks, t-major (FeatureSpec order), from maps keyed by (t, block)."""
    index = {k: i for i, k in enumerate(keys)}
    return [maps[index[(t, b)]] for t in steps for b in blocks]


def cell_scores_from_sweep(sweep: dict[str, Any], run: Run, folds: int, cv_seed: int) -> dict[tuple[int, int], float]:
    """(t, block) → CV mIoU of a CV sweep of the same checkpoint and folds; refuses a test-scored sweep."""
    if sweep.get("mode") != "cv":
        raise ConfigError("--sweep: the sweep was scored on test frames; auto recipe search only uses a cross-validated "
                         "sweep (run `sweep` without --split test)")
    scheme = sweep.get("run_identity_scheme", 1)  # sweeps written before identity scheme 2 hashed the weights only
    if scheme not in (1, 2) or isinstance(scheme, bool):
        raise ConfigError(f"--sweep: unknown run_identity_scheme {scheme!r}; expected 1 or 2")
    if sweep.get("run_weights_hash") != run.identity(scheme):
        raise ConfigError("--sweep: the sweep was computed on a different checkpoint than --run")
    if sweep.get("folds") != folds or sweep.get("cv_seed") != cv_seed:
        raise ConfigError(f"--sweep: the sweep used {sweep.get('folds')} folds / seed {sweep.get('cv_seed')}, "
                         f"not {folds} / {cv_seed}")
    grid = np.array(sweep["miou"], dtype=float)
    return {(int(t), int(b)): float(grid[bi, ti]) for bi, b in enumerate(sweep["blocks"])
            for ti, t in enumerate(sweep["steps"])}


def search_recipe(run: Run, ds: SegDataset, steps: Sequence[int], blocks: Sequence[int],
                  cache: FeatureCache | None = None, folds: int = DEFAULT_FOLDS, cv_seed: int = 0,
                  fit_cfg: FitConfig = SEARCH_FIT, time_budget_s: float = 600.0, max_steps: int = 3,
                  max_blocks: int = 4, top_blocks: int = 6, min_gain: float = 0.002,
                  sweep: dict[str, Any] | None = None, train_split: str = "train",
                  progress: Progress | None = None) -> dict[str, Any]:
    """Greedy CV search; returns {"steps", "blocks", "cv_miou", "trace", "cells", "stopped", "seconds"}."""
    t0 = time.time()
    steps, blocks = sorted(int(s) for s in steps), sorted(int(b) for b in blocks)
    images, masks, stems = load_labelled(ds, train_split, run.image_size, run.image_size)
    ext = FeatureExtractor(run, FeatureSpec(tuple(steps), tuple(blocks)), cache)
    maps, keys = ext.many(images), ext.spec.keys
    names = ds.classes.names
    trace: list[dict[str, Any]] = []

    def score(ss: Sequence[int], bb: Sequence[int], what: str) -> float:
        m = cv_score(_select(maps, keys, ss, bb), masks, names, fit_cfg, folds, cv_seed)["miou"]
        trace.append({"steps": list(ss), "blocks": list(bb), "cv_miou": m, "what": what,
                      "elapsed_s": round(time.time() - t0, 2)})
        if progress:
            progress(len(trace), 0, f"{what}: t={list(ss)} blocks={list(bb)} CV mIoU {m:.3f}")
        return m

    if sweep is not None:
        cells = cell_scores_from_sweep(sweep, run, folds, cv_seed)
        missing = [(t, b) for t in steps for b in blocks if (t, b) not in cells]
        if missing:
            raise ConfigError(f"--sweep: the sweep lacks cells {missing[:5]} of the candidate grid")
        cells = {k: cells[k] for k in keys}
    else:
        cells = {(t, b): score([t], [b], "cell") for t, b in keys}
    (best_t, best_b) = max(cells, key=lambda k: cells[k])
    cur_s, cur_b, cur = [best_t], [best_b], cells[(best_t, best_b)]
    block_rank = sorted(blocks, key=lambda b: -max(cells[(t, b)] for t in steps))[:top_blocks]
    path = [{"steps": list(cur_s), "blocks": list(cur_b), "cv_miou": cur, "what": "best single cell"}]
    while True:
        cands = [(sorted(cur_s + [t]), cur_b, f"add t={t}") for t in steps if t not in cur_s and len(cur_s) < max_steps]
        cands += [(cur_s, sorted(cur_b + [b]), f"add block {b}") for b in block_rank
                  if b not in cur_b and len(cur_b) < max_blocks]
        if not cands:
            stopped = "recipe at its size limit"
            break
        best_round: tuple[float, list[int], list[int], str] | None = None
        out_of_time = False
        for ss, bb, what in cands:
            if time.time() - t0 > time_budget_s:
                out_of_time = True
                break
            m = score(ss, bb, what)
            if best_round is None or m > best_round[0]:
                best_round = (m, ss, bb, what)
        if best_round is not None and best_round[0] >= cur + min_gain:
            cur, cur_s, cur_b = best_round[0], list(best_round[1]), list(best_round[2])
            path.append({"steps": list(cur_s), "blocks": list(cur_b), "cv_miou": cur, "what": best_round[3]})
            log.info("recipe: t=%s blocks=%s CV mIoU %.3f", cur_s, cur_b, cur)
            if not out_of_time:
                continue
        stopped = f"time budget of {time_budget_s:.0f} s spent" if out_of_time else f"no candidate gains {min_gain}"
        break
    return {"steps": cur_s, "blocks": cur_b, "cv_miou": cur, "folds": min(folds, len(stems)), "cv_seed": cv_seed,
            "train_stems": stems, "candidates": {"steps": steps, "blocks": blocks, "top_blocks": block_rank},
            "limits": {"max_steps": max_steps, "max_blocks": max_blocks, "min_gain": min_gain,
                       "time_budget_s": time_budget_s},
            "cells": {f"{b}@{t}": v for (t, b), v in cells.items()}, "trace": trace, "path": path, "stopped": stopped,
            "fit": fit_cfg.to_dict(), "seconds": time.time() - t0}


# tried in this order: cheapest first
TECHNIQUES = ("n_noise", "flip_tta", "rgb_window", "class_balanced", "augment", "self_train")
TECHNIQUE_VALUES = {"n_noise": 3, "flip_tta": True, "class_balanced": True, "augment": 3, "self_train": 60, "rgb_window": 3}


def search_techniques(run: Run, ds: SegDataset, steps: Sequence[int], blocks: Sequence[int],
                      techniques: Sequence[str] = TECHNIQUES, cache: FeatureCache | None = None,
                      folds: int = DEFAULT_FOLDS, cv_seed: int = 0, fit_cfg: FitConfig = SEARCH_FIT,
                      pool: torch.Tensor | None = None,
                      time_budget_s: float = 600.0, min_gain: float = 0.002, train_split: str = "train",
                      progress: Progress | None = None) -> dict[str, Any]:
    """Greedy forward selection of techniques on a fixed recipe, each scored by the same k-fold CV.

    Techniques (TECHNIQUE_VALUES): multi-noise averaging (3 noises), test-time flip averaging, class-balanced
    loss, 3 augmented copies of each labelled frame, self-training on `pool` frames, the frame's RGB in a 3×3
    window as one more feature map.
    Each round tries every unused technique added to the current set, keeps the best if it gains
    ≥ min_gain; stops when none does or time runs out."""
    unknown = [t for t in techniques if t not in TECHNIQUES]
    if unknown:
        raise ConfigError(f"--techniques: unknown technique(s) {unknown}; choose from {list(TECHNIQUES)}")
    if "self_train" in techniques and pool is None:
        raise ConfigError("the self_train technique needs unlabelled pool frames")
    t0 = time.time()
    images, masks, _ = load_labelled(ds, train_split, run.image_size, run.image_size)
    names = ds.classes.names
    maps_cache: dict[tuple[int, int, str], list[torch.Tensor]] = {}
    # the copies the final fit would make (its seed); none when augmentation is not tried
    aug_images, aug_masks, aug_source = augment_labelled(
        images, masks, int(TECHNIQUE_VALUES["augment"]) if "augment" in techniques else 0, fit_cfg.seed)

    def maps_for(n_noise: int, rgb_window: int, what: str) -> list[torch.Tensor]:
        key = (n_noise, rgb_window, what)
        if key not in maps_cache:
            ext = FeatureExtractor(run, FeatureSpec(tuple(steps), tuple(blocks), 0, n_noise, rgb_window), cache)
            if what == "pool":
                from ..segmentation.self_training import choose_pool

                assert pool is not None, "self_train is only tried with a pool"
                src = pool[choose_pool(len(pool), TECHNIQUE_VALUES["self_train"], fit_cfg.seed)]
            else:
                src = {"train": images, "flip": images.flip(-1), "augment": aug_images}[what]
            maps_cache[key] = ext.many(src)
        return maps_cache[key]

    def score(chosen: dict[str, Any]) -> float:
        nn_, win = int(chosen.get("n_noise", 1)), int(chosen.get("rgb_window", 0))
        cfg = FitConfig(**{**fit_cfg.to_dict(), "class_balanced": bool(chosen.get("class_balanced", False))})
        return cv_score(maps_for(nn_, win, "train"), masks, names, cfg, folds, cv_seed,
                        flip_maps=maps_for(nn_, win, "flip") if chosen.get("flip_tta") else None,
                        pool_maps=maps_for(nn_, win, "pool") if chosen.get("self_train") else None,
                        augmented=AugmentedMaps(maps_for(nn_, win, "augment"), aug_masks, aug_source)
                        if chosen.get("augment") else None)["miou"]

    chosen: dict[str, Any] = {}
    cur = score(chosen)  # the recipe alone, scored with this fit
    trace: list[dict[str, Any]] = [{"techniques": {}, "cv_miou": cur, "what": "recipe alone"}]
    stopped = f"no technique gains {min_gain}"
    while True:
        left = [t for t in techniques if t not in chosen]
        if not left:
            stopped = "every technique chosen"
            break
        best: tuple[float, str] | None = None
        out_of_time = False
        for t in left:
            if time.time() - t0 > time_budget_s:
                out_of_time = True
                break
            m = score({**chosen, t: TECHNIQUE_VALUES[t]})
            trace.append({"techniques": {**chosen, t: TECHNIQUE_VALUES[t]}, "cv_miou": m, "what": f"add {t}",
                          "elapsed_s": round(time.time() - t0, 2)})
            if progress:
                progress(len(trace), 0, f"add {t}: CV mIoU {m:.3f} (current {cur:.3f})")
            if best is None or m > best[0]:
                best = (m, t)
        if best is not None and best[0] >= cur + min_gain:
            cur = best[0]
            chosen[best[1]] = TECHNIQUE_VALUES[best[1]]
            if not out_of_time:
                continue
        if out_of_time:
            stopped = f"time budget of {time_budget_s:.0f} s spent"
        break
    return {"chosen": chosen, "cv_miou": cur, "tried": list(techniques), "values": TECHNIQUE_VALUES,
            "fit": fit_cfg.to_dict(), "trace": trace, "stopped": stopped, "seconds": time.time() - t0}
