"""Class tables and the resize / tensor policy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data.classes import IGNORE_INDEX, STUDY5, ClassInfo, ClassTable
from engine.data.transforms import (
    fit_square, fit_square_mask, from_tensor, mask_to_original, probs_to_original, resize_shorter,
    to_tensor,
)


def test_study5_table():
    assert STUDY5.names == ["pupil", "iris", "cornea", "skin", "instrument"]
    assert STUDY5.colors.dtype == np.uint8 and STUDY5.colors.shape == (5, 3)
    assert tuple(STUDY5.colors[1]) == (255, 105, 180) and STUDY5.num_classes == 5
    assert STUDY5.labelmap_txt().splitlines()[0] == "pupil:255,0,0"
    rgb = STUDY5.colorize(np.array([[0, IGNORE_INDEX]], np.uint8))
    assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[0, 1]) == (0, 0, 0)


def test_json_round_trip_and_errors(tmp_path):
    p = STUDY5.to_json(tmp_path / "classes.json")
    assert ClassTable.from_json(p) == STUDY5
    with pytest.raises(ValueError, match="contiguous"):
        ClassTable([ClassInfo(0, "a", (0, 0, 0)), ClassInfo(2, "b", (1, 1, 1))])
    (tmp_path / "bad.json").write_text('{"classes": [{"id": 0}]}')
    with pytest.raises(ValueError, match="bad.json"):
        ClassTable.from_json(tmp_path / "bad.json")


def test_fit_square_geometry():
    img = np.random.default_rng(0).random((30, 60, 3)).astype(np.float32)
    out = fit_square(img, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.float32
    mask = np.zeros((30, 60), np.uint8)
    mask[:, 30:] = 3
    m = fit_square_mask(mask, 16)
    assert m.shape == (16, 16) and set(np.unique(m)) == {0, 3}
    assert (m[:, :8] == 0).all() and (m[:, 8:] == 3).all()  # centre crop keeps the middle


def test_tensor_round_trip():
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    t = to_tensor(rgb)
    assert t.shape == (3, 5, 7) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    assert np.array_equal(from_tensor(t), rgb)


def test_resize_shorter_and_back():
    img = np.random.default_rng(2).random((300, 451, 3)).astype(np.float32)
    small, meta = resize_shorter(img, 64, multiple=8)
    h, w = small.shape[:2]
    assert h % 8 == 0 and w % 8 == 0 and h == 64 and abs(w - 451 * 64 / 300) <= 4
    assert meta.original_hw == (300, 451) and meta.resized_hw == (h, w)
    pred = np.zeros((h, w), np.uint8)
    pred[:, w // 2:] = 2
    back = mask_to_original(pred, meta.original_hw)
    assert back.shape == (300, 451) and set(np.unique(back)) == {0, 2}
    probs = np.random.default_rng(3).random((5, h, w)).astype(np.float32)
    assert probs_to_original(probs, meta.original_hw).shape == (5, 300, 451)
    assert tuple(probs_to_original(torch.from_numpy(probs), (10, 11)).shape) == (5, 10, 11)
