"""Tune's live preview (engine/app/preview.py) against the naive path, and the feature bank's one-forward fill:
- the cross-validated score equals per-fold LDA fitted from scratch on the fold's pixels and scored frame by frame;
- "test" scoring (reporting only) predicts the test frames with the head fitted on every drawn pixel;
- a miss fills the cache with EVERY decoder block, one forward per frame, bit for bit the per-image extractor,
  so a later change of the block set runs no UNet forward at all."""
from __future__ import annotations

import numpy as np
import torch

from engine.data.folder import FolderDataset
from engine.app.explore import FeatureBank, preview_fit
from engine.segmentation.feature_cache import FeatureCache
from engine.segmentation.features import FeatureExtractor, FeatureSpec
from engine.scoring.metrics import ConfusionMatrix, summarize
from engine.segmentation.pixel_classifier import PixelGatherer
from engine.segmentation.preview_head import PreviewConfig, fit_lda

CFG = PreviewConfig(max_pixels=900, folds=2, seed=3)


def _naive_cv(bank: FeatureBank, steps, blocks, n_cls: int, names: list[str]):  # noqa: ANN001, ANN202
    lp = bank.live_preview(CFG)
    maps = FeatureExtractor(bank.run, FeatureSpec(tuple(steps), tuple(blocks)), None).many(bank.images["train"])
    pix = lp.pix
    x = PixelGatherer(maps, lp.out_hw)(pix[:, 0], pix[:, 1], pix[:, 2])
    masks = bank.masks["train"]
    y = masks[pix[:, 0], pix[:, 1], pix[:, 2]].long()
    cm = ConfusionMatrix(n_cls)
    for _, val in lp.folds:
        keep = torch.from_numpy(~np.isin(pix[:, 0].numpy(), val))
        head = fit_lda(x[keep], y[keep], n_cls, CFG.shrinkage)
        for i in val.tolist():
            cm.update(head.logits_maps([m[i] for m in maps], lp.out_hw).argmax(0).numpy(), masks[i].numpy())
    return summarize(cm, names)


def test_cv_preview_equals_naive_folds_and_block_changes_run_no_forward(tiny_run, synth_data, tmp_path,
                                                                        count_calls) -> None:  # noqa: ANN001
    ds = FolderDataset(synth_data)
    n_cls, names = ds.classes.num_classes, ds.classes.names
    cache = FeatureCache(tmp_path / "cache")
    bank = FeatureBank(tiny_run, ds, cache, max_test=2)
    calls = count_calls(tiny_run.model.input_blocks[0])
    head, res = preview_fit(bank, (20, 300), (1, 3), CFG)
    # one forward per train frame (both timesteps in it), every block kept in the cache; one frame at a time so
    # the cached values are the ones `fit` computes (a batched forward rounds some float16 values differently)
    assert calls.n == len(bank.stems["train"])
    ref = _naive_cv(bank, (20, 300), (1, 3), n_cls, names)
    assert res["confusion"] == ref["confusion"] and abs(res["miou"] - ref["miou"]) < 1e-12
    assert res["split"] == "cv" and res["_stems"] == bank.stems["train"] and "cross-validation" in res["scored_on"]
    assert res["cv"]["folds"] == 2 and len(res["per_frame"]) == len(bank.stems["train"])

    # the cache now holds every block of both timesteps, bit for bit what the per-image extractor computes
    n_blocks = len(tiny_run.model.output_blocks)
    every = FeatureSpec((20, 300), tuple(range(n_blocks)))
    cached = FeatureExtractor(tiny_run, every, cache).cached_many(bank.images["train"])
    assert cached is not None
    per_image = FeatureExtractor(tiny_run, every, None).many(bank.images["train"])
    for a, b in zip(cached, per_image):
        assert torch.equal(a.float(), b.float())

    other = [b for b in range(n_blocks) if b not in (1, 3)][:2]
    before = calls.n  # (the naive references above ran the UNet themselves)
    _, res2 = preview_fit(bank, (300,), other, CFG)  # another block set: cache reads only
    assert calls.n == before
    ref2 = _naive_cv(bank, (300,), other, n_cls, names)
    assert res2["confusion"] == ref2["confusion"]

    # reporting only: the head on every drawn pixel, scored on the bank's test frames
    _, test = preview_fit(bank, (20, 300), (1, 3), CFG, scoring="test")
    assert test["split"] == "test" and test["_stems"] == bank.stems["test"]
    maps = bank.maps("test", (20, 300), (1, 3))
    cm = ConfusionMatrix(n_cls)
    for i in range(len(bank.stems["test"])):
        cm.update(head.logits_maps([m[i] for m in maps], bank.live_preview(CFG).out_hw).argmax(0).numpy(),
                  bank.masks["test"][i].numpy())
    assert test["confusion"] == cm.matrix.tolist()
