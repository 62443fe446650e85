"""Saving a label: full-resolution mask with exact ids, the train split, the who/what/when log."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.folder import FolderDataset
from engine.labelling.label_store import read_log, save_label


def test_save_label_writes_mask_split_and_log(loop_data: Path) -> None:
    ds = FolderDataset(loop_data)
    stem = next(s for s in ds.stems("unlabeled") if not ds.has_mask(s))
    h, w = ds.image(stem).shape[:2]
    mask = np.full((h, w), 2, dtype=np.uint8)
    mask[5:9, :] = 4
    mask[0, 0] = 255
    entry = save_label(loop_data, stem, mask, who="tester", details={"edits": {"stroke": 1}})
    saved = np.asarray(Image.open(loop_data / "masks" / f"{stem}.png"))
    assert saved.dtype == np.uint8 and np.array_equal(saved, mask)
    ds2 = FolderDataset(loop_data)
    assert ds2.stems("train")[-1] == stem and ds2.stems("test") == ds.stems("test")
    log = read_log(loop_data)
    assert log == [entry] and entry["who"] == "tester" and entry["action"] == "label"
    assert entry["class_pixels"] == {"cornea": int((mask == 2).sum()), "instrument": 4 * w - 0}
    assert entry["ignore_pixels"] == 1 and entry["edits"] == {"stroke": 1}
    again = save_label(loop_data, stem, mask, who="tester")
    assert again["action"] == "relabel" and FolderDataset(loop_data).stems("train").count(stem) == 1
    assert len(read_log(loop_data)) == 2


def test_save_label_freezes_the_default_split(loop_data: Path) -> None:
    (loop_data / "split.json").unlink()  # default rule: sorted labelled stems, first 20 train, rest test
    before = FolderDataset(loop_data)
    stem = next(s for s in before.stems("unlabeled") if not before.has_mask(s))
    save_label(loop_data, stem, np.zeros(before.image(stem).shape[:2], np.uint8))
    after = FolderDataset(loop_data)
    assert after.stems("test") == before.stems("test") and after.stems("train") == before.stems("train") + [stem]


def test_save_label_refuses_bad_input(loop_data: Path) -> None:
    ds = FolderDataset(loop_data)
    test_stem = ds.stems("test")[0]
    hw = ds.image(test_stem).shape[:2]
    with pytest.raises(ValueError, match="is a test frame"):
        save_label(loop_data, test_stem, np.zeros(hw, np.uint8))
    stem = next(s for s in ds.stems("unlabeled") if not ds.has_mask(s))
    with pytest.raises(ValueError, match=r"mask values \[7\] are not class ids 0..4"):
        save_label(loop_data, stem, np.full(hw, 7, np.uint8))
    with pytest.raises(ValueError, match="mask is 3x3 but its image is"):
        save_label(loop_data, stem, np.zeros((3, 3), np.uint8))
    assert not (loop_data / "masks" / f"{stem}.png").exists() and read_log(loop_data) == []
    assert json.loads((loop_data / "split.json").read_text())["train"] == ds.stems("train")
    shutil.rmtree(loop_data / "masks")


def test_labelling_copy_hides_train_masks(loop_data: Path, tmp_path: Path) -> None:
    from engine.labelling.label_store import labelling_copy

    src = FolderDataset(loop_data)
    out = FolderDataset(labelling_copy(loop_data, tmp_path / "copy", keep_train=1))
    assert out.stems("train") == src.stems("train")[:1] and out.stems("test") == src.stems("test")
    every = set(out.stems("unlabeled")) | set(out.stems("test"))
    assert every == set(src.stems("unlabeled")) | set(src.stems("test"))  # every image copied
    assert sorted(s for s in every if out.has_mask(s)) == sorted(src.stems("train")[:1] + src.stems("test"))
    hidden = src.stems("train")[1:]
    assert hidden and not any(out.has_mask(s) for s in hidden) and set(hidden) <= set(out.stems("unlabeled"))
    with pytest.raises(FileExistsError):
        labelling_copy(loop_data, tmp_path / "copy")
