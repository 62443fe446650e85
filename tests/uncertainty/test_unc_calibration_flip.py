"""calibrate's out-of-fold predictions include the mirrored view when the classifier predicts with flip averaging."""
from __future__ import annotations

import torch

from engine.segmentation.classifier_training import FitConfig, fit_ensemble
from engine.segmentation.pixel_classifier import summarise
from engine.segmentation.self_training import ensemble_logits
from engine.uncertainty.classifier_calibration import out_of_fold


def test_out_of_fold_with_flip_maps_matches_a_naive_loop() -> None:
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(4, 6, 8, 8, generator=g), torch.randn(4, 4, 4, 4, generator=g)]
    flip = [m.flip(-1) + 0.1 * torch.randn(m.shape, generator=g) for m in maps]
    masks = torch.randint(0, 3, (4, 16, 16), generator=g)
    cfg = FitConfig(members=2, max_epochs=1, batch_size=64, max_pixels=2000)
    probs, scores = out_of_fold(maps, masks, 3, cfg, folds=2, flip_maps=flip)
    plain, _ = out_of_fold(maps, masks, 3, cfg, folds=2)
    for k in range(2):  # the naive reference: fold k holds out frames k, k + 2
        held = [k, k + 2]
        keep = [i for i in range(4) if i not in held]
        model, _ = fit_ensemble([m[keep] for m in maps], masks[keep], 3, cfg)
        for i in held:
            ref = summarise(ensemble_logits(model, [m[i] for m in maps], (16, 16), [m[i] for m in flip]))
            assert torch.allclose(probs[i], ref.probs, atol=1e-5)
            assert abs(scores[i] - ref.score) < 1e-5
    assert not torch.allclose(probs[0], plain[0])  # the mirrored view really is in


def test_out_of_fold_with_augmented_copies_fits_only_the_kept_frames_copies() -> None:
    """calibrate fits each fold as the classifier was fitted: with the augmented copies of that fold's frames only."""
    from engine.segmentation.augmentation import AugmentedMaps

    g = torch.Generator().manual_seed(1)
    maps = [torch.randn(4, 6, 8, 8, generator=g)]
    masks = torch.randint(0, 3, (4, 16, 16), generator=g)
    source = torch.arange(4).repeat(2)
    aug = AugmentedMaps([torch.randn(8, 6, 8, 8, generator=g)], torch.randint(0, 3, (8, 16, 16), generator=g), source)
    cfg = FitConfig(members=2, max_epochs=1, batch_size=64, max_pixels=5000)
    probs, _ = out_of_fold(maps, masks, 3, cfg, folds=2, augmented=aug)
    for k in range(2):
        keep = [i for i in range(4) if i not in (k, k + 2)]
        copies = [j for j in range(8) if int(source[j]) in keep]
        model, _ = fit_ensemble([torch.cat([maps[0][keep], aug.maps[0][copies]])],
                                torch.cat([masks[keep], aug.masks[copies]]), 3, cfg)
        for i in (k, k + 2):
            ref = summarise(ensemble_logits(model, [maps[0][i]], (16, 16)))
            assert torch.allclose(probs[i], ref.probs, atol=1e-5)
