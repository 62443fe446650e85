"""Train-time augmentation: exact geometry against naive references, seeding, fold hygiene in CV, and `fit --augment`."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from engine.cli import main
from engine.data.classes import IGNORE_INDEX
from engine.scoring import cv
from engine.segmentation import augmentation
from engine.segmentation.augmentation import AugmentedMaps, augment_labelled, colour_jitter, warp
from engine.segmentation.classifier_training import FitConfig
from engine.errors import ConfigError

TINY_FIT = FitConfig(members=1, max_epochs=1, max_pixels=2000, val_fraction=0.0)


def frames(n: int = 3, size: int = 16, label: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1, torch.randint(0, 5, (n, label, label), generator=g)


def rotation(quarter_turns: int) -> torch.Tensor:
    a = math.pi / 2 * quarter_turns
    return torch.tensor([[[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]])


def test_identity_warp_returns_the_frame_and_mask_unchanged() -> None:
    images, masks = frames()
    theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    image, mask = warp(images[0], masks[0], theta)
    torch.testing.assert_close(image, images[0], atol=1e-5, rtol=0)
    assert torch.equal(mask, masks[0])


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_quarter_turns_equal_rot90_for_image_and_mask_of_other_sizes(turns: int) -> None:
    """Pixel centres map onto pixel centres: the warp must equal torch.rot90 exactly, at both resolutions."""
    images, masks = frames(size=16, label=8)
    image, mask = warp(images[1], masks[1], rotation(turns))
    k = {1: 1, 2: 2, 3: -1}[turns]  # affine_grid maps output → input coordinates
    torch.testing.assert_close(image, torch.rot90(images[1], k, dims=(-2, -1)), atol=1e-5, rtol=0)
    assert torch.equal(mask, torch.rot90(masks[1], k, dims=(-2, -1)))


def test_pixels_from_outside_the_frame_are_ignored_not_labelled() -> None:
    images, masks = frames(label=8)
    shift = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])  # sample x + 0.5: two label pixels from the right
    _, mask = warp(images[0], masks[0], shift)
    assert torch.equal(mask[:, :6], masks[0][:, 2:])
    assert (mask[:, 6:] == IGNORE_INDEX).all()


def test_colour_jitter_is_global_and_stays_in_range() -> None:
    flat = torch.full((3, 8, 8), 0.2)
    flat[1] = -0.4
    out = colour_jitter(flat, torch.Generator().manual_seed(3))
    assert out.min() >= -1 and out.max() <= 1
    assert torch.equal(out, out[:, :1, :1].expand_as(out))  # one colour in, one colour out: no pixel noise
    assert not torch.equal(out, flat)


def test_copies_are_seeded_copy_major_and_mirrored_on_even_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    images, masks = frames(n=3)
    a = augment_labelled(images, masks, 2, seed=5)
    b = augment_labelled(images, masks, 2, seed=5)
    c = augment_labelled(images, masks, 2, seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (6, 3, 16, 16) and a[1].shape == (6, 8, 8) and a[2].tolist() == [0, 1, 2, 0, 1, 2]
    # with the random parts switched off, copy 0 is the mirror and copy 1 the frame itself
    monkeypatch.setattr(augmentation, "random_affine", lambda g: torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]))
    monkeypatch.setattr(augmentation, "colour_jitter", lambda image, g: image)
    im, mk, _ = augment_labelled(images, masks, 2, seed=5)
    torch.testing.assert_close(im[:3], images.flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(im[3:], images, atol=1e-5, rtol=0)
    assert torch.equal(mk[:3], masks.flip(-1)) and torch.equal(mk[3:], masks)
    assert augment_labelled(images, masks, 0, seed=5)[0].shape[0] == 0
    with pytest.raises(ValueError, match="augment copies must be in 0..16, got 17"):
        augment_labelled(images, masks, 17, seed=0)


def test_with_frames_takes_only_the_copies_of_the_given_frames() -> None:
    maps = [torch.arange(3.0)[:, None, None, None].expand(3, 2, 4, 4)]
    masks = torch.zeros(3, 4, 4, dtype=torch.long)
    source = torch.tensor([0, 1, 2, 0, 1, 2])
    aug = AugmentedMaps([source.float()[:, None, None, None].expand(6, 2, 4, 4) + 10], masks.repeat(2, 1, 1), source)
    m, k = aug.with_frames([x[[0, 2]] for x in maps], masks[[0, 2]], torch.tensor([0, 2]))
    assert m[0][:, 0, 0, 0].tolist() == [0.0, 2.0, 10.0, 12.0, 10.0, 12.0] and len(k) == 6
    m, _ = aug.with_frames(maps, masks)
    assert len(m[0]) == 9


def test_cv_folds_fit_only_the_copies_of_their_own_training_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """A held-out frame's augmented copy in its fold's fit would leak its labels into the CV score."""
    n, copies = 6, 2
    g = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 3, (n, 8, 8), generator=g)
    maps = [torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 2, 8, 8).clone()]
    source = torch.arange(n).repeat(copies)
    aug = AugmentedMaps([100 + source.float()[:, None, None, None].expand(n * copies, 2, 8, 8).clone()],
                        masks.repeat(copies, 1, 1), source)
    seen: list[tuple[set[int], set[int]]] = []
    real = cv.fit_ensemble

    def spy(mp, mk, *a, **k):  # noqa: ANN001, ANN002, ANN003
        ids = mp[0][:, 0, 0, 0].long().tolist()
        seen.append(({i for i in ids if i < 100}, {i - 100 for i in ids if i >= 100}))
        return real(mp, mk, *a, **k)

    monkeypatch.setattr(cv, "fit_ensemble", spy)
    cv.cv_score(maps, masks, ["a", "b", "c"], TINY_FIT, folds=3, seed=0, augmented=aug)
    for (frames_fit, copies_fit), (tr, _) in zip(seen, cv.kfold_indices(n, 3, 0)):
        assert frames_fit == copies_fit == set(tr.tolist())
    assert len(seen) == 3


def test_fit_config_reads_augment_and_old_configs() -> None:
    d = FitConfig(augment=3).to_dict()
    assert FitConfig.from_dict(d).augment == 3
    old = {k: v for k, v in d.items() if k != "augment"}
    assert FitConfig.from_dict(old).augment == 0  # fitted before augmentation existed: fitted without it
    with pytest.raises(ConfigError, match="augment"):
        FitConfig.from_dict({**d, "augment": 17})


def test_fit_augment_fits_more_pixels_and_records_it(tiny_run_dir: Path, synth_data: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    outs = {}
    for k in (0, 2):
        out = tmp_path / f"clf{k}"
        assert main(["fit", "--run", str(tiny_run_dir), "--data", str(synth_data), "--steps", "50", "--blocks", "1",
                     "--members", "1", "--epochs", "1", "--augment", str(k), "--out", str(out), "--no-cache"]) == 0
        outs[k] = json.loads((out / "config.json").read_text())
    assert outs[2]["fit"]["augment"] == 2 and outs[0]["fit"]["augment"] == 0
    n = outs[0]["stats"]["n_train_images"]
    assert outs[2]["stats"]["augmented_frames"] == 2 * n
    total = lambda c: c["stats"]["train_pixels"] + c["stats"]["val_pixels"]  # noqa: E731
    assert total(outs[0]) < total(outs[2]) <= 3 * total(outs[0])  # copies add pixels; out-of-frame ones are ignored
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["fit", "--run", str(tiny_run_dir), "--data", str(synth_data), "--augment", "17",
              "--out", str(tmp_path / "x"), "--no-cache"])
    assert ("argument --augment: must be at most 16 (each copy's features are held in memory), got 17"
            in capsys.readouterr().err)
