"""Ensemble training: members differ but train together, ignore pixels unused, class balance, early stopping, seeds."""
from __future__ import annotations

import pytest
import torch

import engine.segmentation.classifier_training as ct
from engine.segmentation.classifier_training import FitConfig, class_weights, fit_ensemble
from engine.segmentation.pixel_classifier import EnsembleMLP, PixelGatherer


def _toy(n: int = 2, size: int = 16, seed: int = 0):
    """Native maps at half resolution whose channels carry the label; masks with some ignore pixels."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    masks[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    masks[:, :, : size // 2][masks[:, :, : size // 2] == 0] = 2
    masks[:, 0] = 255
    full = torch.nn.functional.one_hot(masks.clamp(max=2), 3).permute(0, 3, 1, 2).float()
    full = full + 0.1 * torch.randn(full.shape, generator=g)
    maps = [full, torch.nn.functional.avg_pool2d(full, 2), torch.randn(n, 4, size // 4, size // 4, generator=g)]
    return maps, masks


CFG = FitConfig(members=4, max_epochs=3, batch_size=64, val_fraction=0.2, patience=5)


def test_members_differ_but_train_together(monkeypatch) -> None:
    maps, masks = _toy()
    init = EnsembleMLP(10, 3, (128, 32), members=4, seed=0)  # same D, arch and seed as the fit
    for w in init.weights:
        assert w.shape[0] == 4
        assert not torch.allclose(w[0], w[1])
    optimisers, train_forwards, steps = [], [], []
    orig_forward, orig_adam = EnsembleMLP.forward, torch.optim.Adam

    def forward(self, x):
        if self.training:
            train_forwards.append(x.shape[0])
        return orig_forward(self, x)

    class CountingAdam(orig_adam):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            optimisers.append(self)

        def step(self, *a, **k):
            steps.append(1)
            return super().step(*a, **k)

    monkeypatch.setattr(EnsembleMLP, "forward", forward)
    monkeypatch.setattr(ct.torch.optim, "Adam", CountingAdam)
    model, stats = fit_ensemble(maps, masks, 3, FitConfig(members=4, max_epochs=12, batch_size=64, val_fraction=0.2,
                                                          patience=20))
    assert len(optimisers) == 1 and len(train_forwards) == len(steps) > 0  # one forward of all members per step
    assert all(p.shape[0] == 4 for p in model.parameters())
    for k, v in model.state_dict().items():
        if k.startswith("weights"):
            assert not torch.allclose(v, init.state_dict()[k])  # every member moved
    assert len(stats["val_loss_per_member"]) == 4
    assert max(stats["val_loss_per_member"]) < 0.5 * torch.log(torch.tensor(3.0)).item()  # all learned
    assert len(set(round(v, 6) for v in stats["val_loss_per_member"])) > 1  # ...independently


def test_ignore_pixels_are_never_used(monkeypatch) -> None:
    maps, masks = _toy()
    drawn: list[torch.Tensor] = []
    orig = PixelGatherer.__call__

    def spy(self, n, y, x):
        drawn.append(masks[n, y, x])
        return orig(self, n, y, x)

    monkeypatch.setattr(PixelGatherer, "__call__", spy)
    fit_ensemble(maps, masks, 3, CFG)
    assert drawn and all(bool((d != 255).all()) for d in drawn)


def test_all_ignore_or_bad_labels_are_errors() -> None:
    maps, masks = _toy()
    with pytest.raises(ValueError, match="no labelled pixels"):
        fit_ensemble(maps, torch.full_like(masks, 255), 3, CFG)
    bad = masks.clone()
    bad[0, 5, 5] = 7
    with pytest.raises(ValueError, match=r"\[7\].*0\.\.2"):
        fit_ensemble(maps, bad, 3, CFG)


def test_class_weights_and_class_balanced_loss(monkeypatch) -> None:
    labels = torch.tensor([0] * 90 + [1] * 10)
    w = class_weights(labels, 3)
    assert w[2] == 0 and w[0] * 9 == pytest.approx(float(w[1]))
    assert float(w[:2].mean()) == pytest.approx(1.0)
    seen = []
    orig = ct.F.cross_entropy

    def spy(*a, **k):
        seen.append(k.get("weight"))
        return orig(*a, **k)

    monkeypatch.setattr(ct.F, "cross_entropy", spy)
    maps, masks = _toy()
    fit_ensemble(maps, masks, 3, FitConfig(members=2, max_epochs=1, batch_size=64, class_balanced=True))
    weights = [s for s in seen if s is not None]
    assert weights and torch.allclose(weights[0].sum(), torch.tensor(3.0))
    seen.clear()
    fit_ensemble(maps, masks, 3, FitConfig(members=2, max_epochs=1, batch_size=64))
    assert all(s is None for s in seen)


def test_early_stopping_keeps_each_members_best_epoch(monkeypatch) -> None:
    # scripted validation losses: member 0 is best after epoch 1, member 1 after epoch 3, member 2 after epoch 2
    # (the first call scores the untrained ensemble: a fit must end below it, see check_learned)
    script = [torch.tensor([9.0, 9.0, 9.0]), torch.tensor([1.0, 3.0, 3.0]), torch.tensor([2.0, 2.0, 1.0]),
              torch.tensor([2.0, 1.0, 2.0]), torch.tensor([2.0, 2.0, 2.0])]
    snapshots = []

    def fake_val(model, *a, **k):
        snapshots.append({k2: v.clone() for k2, v in model.state_dict().items()})
        return script[len(snapshots) - 1]

    monkeypatch.setattr(ct, "_validation_loss", fake_val)
    maps, masks = _toy()
    model, stats = fit_ensemble(maps, masks, 3, FitConfig(members=3, max_epochs=4, batch_size=64, patience=10))
    final = model.state_dict()
    for member, epoch in [(0, 1), (1, 3), (2, 2)]:  # snapshots[0] is the untrained ensemble
        for k in final:
            torch.testing.assert_close(final[k][member], snapshots[epoch][k][member])
    assert stats["val_loss_per_member"] == [1.0, 1.0, 1.0]


def test_patience_stops_when_no_member_improves(monkeypatch) -> None:
    calls = []

    def fake_val(model, *a, **k):
        calls.append(1)
        return {1: torch.tensor([9.0, 9.0]), 2: torch.tensor([1.0, 1.0])}.get(len(calls), torch.tensor([5.0, 5.0]))

    monkeypatch.setattr(ct, "_validation_loss", fake_val)
    maps, masks = _toy()
    _, stats = fit_ensemble(maps, masks, 3, FitConfig(members=2, max_epochs=10, batch_size=64, patience=2))
    assert stats["epochs"] == 3


def test_same_seed_same_weights() -> None:
    maps, masks = _toy()
    cfg = FitConfig(members=2, max_epochs=2, batch_size=64, seed=5)
    a, _ = fit_ensemble(maps, masks, 3, cfg)
    b, _ = fit_ensemble(maps, masks, 3, cfg)
    c, _ = fit_ensemble(maps, masks, 3, FitConfig(members=2, max_epochs=2, batch_size=64, seed=6))
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(a.state_dict()["weights.0"], c.state_dict()["weights.0"])
