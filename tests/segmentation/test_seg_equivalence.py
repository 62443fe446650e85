"""The factorised paths equal the naive "upsample, concatenate, Linear" path (README, "How segmentation works")."""
from __future__ import annotations

import pytest
import torch

from engine.segmentation.classifier_training import FitConfig, fit_ensemble
from engine.segmentation.features import FeatureExtractor, FeatureSpec
from engine.segmentation.pixel_classifier import EnsembleMLP, PixelGatherer, naive_pixel_features

SHAPES = [(5, 4, 4), (3, 7, 5), (6, 13, 9), (2, 16, 16)]


def _maps(n: int, shapes, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, *s, generator=g) for s in shapes]


@pytest.mark.parametrize("out_hw", [(16, 16), (30, 22), (17, 41), (7, 3)])
def test_gatherer_equals_naive_upsample_and_index(out_hw) -> None:
    maps = _maps(2, SHAPES)
    gather = PixelGatherer(maps, out_hw)
    H, W = out_hw
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    for n in range(2):
        naive = naive_pixel_features([m[n] for m in maps], out_hw)  # (D, H, W)
        got = gather(torch.full((H * W,), n), yy.flatten(), xx.flatten())  # (H*W, D)
        torch.testing.assert_close(got, naive.reshape(naive.shape[0], -1).T, atol=1e-5, rtol=1e-5)
    # a random subset in random order (the way training draws pixels)
    g = torch.Generator().manual_seed(1)
    n, y, x = (torch.randint(0, k, (50,), generator=g) for k in (2, H, W))
    ref = torch.stack([naive_pixel_features([m[i] for m in maps], out_hw)[:, a, b] for i, a, b in zip(n, y, x)])
    torch.testing.assert_close(gather(n, y, x), ref, atol=1e-5, rtol=1e-5)


def _randomised_eval_model(d: int, c: int = 4, members: int = 5) -> EnsembleMLP:
    model = EnsembleMLP(d, c, (16, 8), members, seed=3)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        for norm in model.norms:
            norm.running_mean.copy_(torch.randn(norm.running_mean.shape, generator=g) * 0.1)
            norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _naive_logits(model: EnsembleMLP, maps, out_hw) -> torch.Tensor:
    feats = naive_pixel_features(maps, out_hw)  # (D, H, W)
    with torch.no_grad():
        logits = model(feats.reshape(feats.shape[0], -1).T)  # (E, H*W, C)
    return logits.transpose(1, 2).reshape(model.members, model.num_classes, *out_hw)


@pytest.mark.parametrize("out_hw,chunk", [((16, 16), 5), ((30, 22), 2), ((17, 41), 3), ((9, 9), 1)])
def test_predict_logits_equals_naive(out_hw, chunk) -> None:
    maps = [m[0] for m in _maps(1, SHAPES, seed=2)]
    model = _randomised_eval_model(sum(s[0] for s in SHAPES))
    got = model.predict_logits(maps, out_hw, member_chunk=chunk)
    assert got.shape == (5, 4, *out_hw)
    torch.testing.assert_close(got, _naive_logits(model, maps, out_hw), atol=1e-5, rtol=1e-5)


def test_wrong_feature_dim_is_an_error() -> None:
    model = _randomised_eval_model(10)
    with pytest.raises(ValueError, match="D=10"):
        model.predict_logits([torch.randn(4, 3, 3)], (6, 6))


def test_trained_classifier_on_real_features(tiny_run) -> None:
    """Real diffusion features, a classifier actually fitted on them: factorised == naive, for whole images
    and for the gathered training pixels."""
    ext = FeatureExtractor(tiny_run, FeatureSpec((30, 250), (0, 1, 3)))
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    masks = (images[:, 0] > 0).long()
    masks[:, :2] = 255
    stacked = ext.many(images, dtype=torch.float32)
    model, stats = fit_ensemble(stacked, masks, 2, FitConfig(members=3, max_epochs=2, batch_size=256))
    assert stats["feature_dim"] == sum(ext.channels) == model.in_dim
    for out_hw in [(32, 32), (20, 44)]:
        maps = [m[1] for m in stacked]
        torch.testing.assert_close(model.predict_logits(maps, out_hw, member_chunk=2),
                                   _naive_logits(model, maps, out_hw), atol=1e-4, rtol=1e-4)
    gather = PixelGatherer(stacked, (32, 32))
    n, y, x = torch.tensor([0, 1, 1]), torch.tensor([5, 31, 0]), torch.tensor([7, 0, 31])
    ref = torch.stack([naive_pixel_features([m[i] for m in stacked], (32, 32))[:, a, b] for i, a, b in zip(n, y, x)])
    torch.testing.assert_close(gather(n, y, x), ref, atol=1e-5, rtol=1e-5)
