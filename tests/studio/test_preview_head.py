"""The Tune preview head (closed-form shrinkage LDA): its factorised prediction equals the naive one, the LDA
from sufficient statistics equals the LDA fitted on the rows directly (also for fold = all − held-out), and it
learns what is linearly readable."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from engine.segmentation.pixel_classifier import PixelGatherer, naive_pixel_features
from engine.segmentation.preview_head import LdaStats, LinearHead, PreviewConfig, fit_lda, lda_head


def _toy(seed: int = 0, n: int = 4, classes: int = 3) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = torch.randint(0, classes, (n, 16, 16), generator=g)
    masks[:, :2] = 255  # some ignore pixels
    onehot = F.one_hot(masks.clamp(max=classes - 1), classes).permute(0, 3, 1, 2).float()
    # features that carry the class (one-hot + noise) at full size, plus noise at half size, offset and scaled
    a = 3.0 * onehot + 0.3 * torch.randn(n, classes, 16, 16, generator=g) + 5.0
    b = 10.0 * torch.randn(n, 5, 8, 8, generator=g)
    return [a, b], masks


def _rows(maps: list[torch.Tensor], masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pix = (masks != 255).nonzero()
    x = PixelGatherer(maps, (16, 16))(pix[:, 0], pix[:, 1], pix[:, 2])
    return x, masks[pix[:, 0], pix[:, 1], pix[:, 2]].long(), pix[:, 0]


def test_factorised_logits_equal_the_naive_path() -> None:
    maps, _ = _toy()
    g = torch.Generator().manual_seed(1)
    head = LinearHead(torch.randn(8, 3, generator=g), torch.randn(3, generator=g))
    one = [m[0] for m in maps]
    naive = head.logits(naive_pixel_features(one, (16, 16)).permute(1, 2, 0).reshape(-1, 8))
    fact = head.logits_maps(one, (16, 16)).permute(1, 2, 0).reshape(-1, 3)
    assert torch.allclose(naive, fact, atol=1e-5)


def test_lda_from_statistics_equals_lda_on_the_rows_for_every_fold() -> None:
    maps, masks = _toy()
    x, y, frame = _rows(maps, masks)
    shift = x.mean(0)
    per_frame = [LdaStats.of(x[frame == i] - shift, y[frame == i], 3) for i in range(4)]
    total = per_frame[0]
    for s in per_frame[1:]:
        total = LdaStats(total.counts + s.counts, total.sums + s.sums, total.gram + s.gram)
    for held_out in (None, 0, 3):  # all rows, then "all minus one frame" as a cross-validation fold
        keep = frame != held_out if held_out is not None else torch.ones_like(frame, dtype=torch.bool)
        fast = lda_head(total - per_frame[held_out] if held_out is not None else total, shift, 0.05)
        naive = fit_lda(x[keep], y[keep], 3, 0.05)
        torch.testing.assert_close(fast.logits(x), naive.logits(x), atol=2e-3, rtol=1e-4)


def test_learns_the_classes_and_never_predicts_an_absent_one() -> None:
    maps, masks = _toy(classes=2)
    x, y, _ = _rows(maps, masks)
    head = fit_lda(x, y, 4)  # 4 classes in the table, 2 present
    assert (head.logits(x).argmax(1) == y).float().mean() > 0.95  # the class is linearly readable
    labels = head.logits_maps([m[0] for m in maps], (16, 16)).argmax(0)
    assert set(np.unique(labels.numpy())) <= {0, 1}
    only = lda_head(LdaStats.of(x, torch.zeros_like(y), 4), x.mean(0), 0.01)  # one present class
    assert set(only.logits(x).argmax(1).tolist()) == {0}


def test_channels_last_gather_equals_the_pixel_gatherer_exactly() -> None:
    from engine.app.preview import gather_rows

    g = torch.Generator().manual_seed(2)
    for shape in ((3, 5, 8, 8), (2, 4, 16, 16), (2, 3, 4, 8)):  # upsampled ×2, native, non-square
        m = torch.randn(*shape, generator=g).half()
        pix = torch.stack([torch.randint(0, shape[0], (200,), generator=g), torch.randint(0, 16, (200,), generator=g),
                           torch.randint(0, 16, (200,), generator=g)], 1)
        ref = PixelGatherer([m], (16, 16))(pix[:, 0], pix[:, 1], pix[:, 2])
        assert torch.equal(gather_rows(m, pix, (16, 16)), ref)


def test_the_preview_uses_the_sweeps_folds() -> None:
    from engine.scoring.cv import DEFAULT_FOLDS

    assert PreviewConfig().folds == DEFAULT_FOLDS  # preview, sweep and "Fit ensemble" score on the same folds
