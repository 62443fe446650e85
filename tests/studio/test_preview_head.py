"""The Tune preview head: its factorised prediction equals the naive one, and it matches scikit-learn's own
multinomial logistic regression on the same standardised pixels."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from engine.segmentation.pixel_classifier import PixelGatherer, naive_pixel_features
from engine.segmentation.preview_head import LinearHead, PreviewConfig, fit_preview_head


def _toy(seed: int = 0, n: int = 4, classes: int = 3) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = torch.randint(0, classes, (n, 16, 16), generator=g)
    masks[:, :2] = 255  # some ignore pixels
    onehot = F.one_hot(masks.clamp(max=classes - 1), classes).permute(0, 3, 1, 2).float()
    # features that carry the class (downsampled one-hot + noise) at two native sizes (16² and 8²)
    a = onehot + 0.3 * torch.randn(n, classes, 16, 16, generator=g)
    b = torch.randn(n, 5, 8, 8, generator=g)
    return [a, b], masks


def test_factorised_logits_equal_the_naive_path() -> None:
    maps, _ = _toy()
    g = torch.Generator().manual_seed(1)
    head = LinearHead(torch.randn(8, 3, generator=g), torch.randn(3, generator=g))
    one = [m[0] for m in maps]
    naive = head.logits(naive_pixel_features(one, (16, 16)).permute(1, 2, 0).reshape(-1, 8))
    fact = head.logits_maps(one, (16, 16)).permute(1, 2, 0).reshape(-1, 3)
    assert torch.allclose(naive, fact, atol=1e-5)


def test_matches_sklearn_on_the_same_pixels_and_learns_the_classes() -> None:
    from sklearn.linear_model import LogisticRegression

    maps, masks = _toy()
    cfg = PreviewConfig(max_pixels=10_000, l2=1.0, max_iter=500)
    head = fit_preview_head(maps, masks, 3, cfg)
    pix = (masks != 255).nonzero()
    x = PixelGatherer(maps, (16, 16))(pix[:, 0], pix[:, 1], pix[:, 2]).double()
    y = masks[pix[:, 0], pix[:, 1], pix[:, 2]].numpy()
    xs = ((x - x.mean(0)) / x.std(0)).numpy()
    ref = LogisticRegression(C=1.0, max_iter=2000, tol=1e-10).fit(xs, y)
    ours = head.logits(x.float()).argmax(1).numpy()
    assert (ours == ref.predict(xs)).mean() > 0.99
    assert (ours == y).mean() > 0.9  # the class is linearly readable from these features


def test_absent_class_is_never_predicted_and_empty_masks_are_refused() -> None:
    maps, masks = _toy(classes=2)
    head = fit_preview_head(maps, masks, 4, PreviewConfig(max_iter=50))
    labels = head.logits_maps([m[0] for m in maps], (16, 16)).argmax(0)
    assert set(np.unique(labels.numpy())) <= {0, 1}
    try:
        fit_preview_head(maps, torch.full_like(masks, 255), 4)
    except ValueError as e:
        assert "no labelled pixels" in str(e)
    else:
        raise AssertionError("empty masks were accepted")
