"""Folder data set: layout, split rules and validation errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data.classes import STUDY5
from engine.data.folder import FolderDataset, load_labelled, write_folder_dataset
from engine.data.images import ImageError


def _items(n_labelled: int, n_unlabelled: int, hw=(12, 16)):
    rng = np.random.default_rng(0)
    for i in range(n_labelled + n_unlabelled):
        rgb = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
        mask = rng.integers(0, 5, hw, dtype=np.uint8) if i < n_labelled else None
        yield f"f{i:03d}", rgb, mask


def test_default_split(tmp_path):
    write_folder_dataset(tmp_path, STUDY5, _items(25, 4))
    ds = FolderDataset(tmp_path)
    assert ds.classes == STUDY5
    assert ds.stems("train") == [f"f{i:03d}" for i in range(20)]
    assert ds.stems("test") == [f"f{i:03d}" for i in range(20, 25)]
    assert len(ds.stems("unlabeled")) == 24 and ds.stems("unlabelled") == ds.stems("unlabeled")  # 29 images - 5 test
    assert not set(ds.stems("unlabeled")) & set(ds.stems("test"))
    assert ds.has_mask("f000") and not ds.has_mask("f027")
    assert ds.image("f000").shape == (12, 16, 3) and ds.mask("f000").dtype == np.uint8
    assert ds.image_path("f000").name == "f000.png"
    x, y, _ = load_labelled(ds, "test", 8, 8)
    assert x.shape == (5, 3, 8, 8) and y.shape == (5, 8, 8) and y.dtype == torch.long
    assert x.min() >= -1 and x.max() <= 1


def test_split_json(tmp_path):
    split = {"train": ["f000"], "test": ["f001", "f002"], "unlabelled": ["f003", "f004"]}
    write_folder_dataset(tmp_path, STUDY5, _items(3, 2), split)
    ds = FolderDataset(tmp_path)
    assert ds.stems("train") == ["f000"] and ds.stems("unlabeled") == ["f003", "f004"]
    (tmp_path / "split.json").write_text(json.dumps({"train": ["f000", "nope1", "nope2"]}))
    with pytest.raises(ValueError, match="nope1"):
        FolderDataset(tmp_path)


def test_missing_classes_json(tmp_path):
    write_folder_dataset(tmp_path, STUDY5, _items(1, 0))
    (tmp_path / "classes.json").unlink()
    with pytest.raises(FileNotFoundError, match="classes.json"):
        FolderDataset(tmp_path)


def test_mask_validation(tmp_path):
    write_folder_dataset(tmp_path, STUDY5, _items(2, 0))
    bad = np.zeros((12, 16), np.uint8)
    bad[0, 0], bad[0, 1], bad[0, 2] = 7, 9, 255
    Image.fromarray(bad).save(tmp_path / "masks" / "f000.png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "masks" / "f001.png")
    ds = FolderDataset(tmp_path)
    with pytest.raises(ImageError, match=r"f000.png.*\[7, 9\]"):
        ds.mask("f000")
    with pytest.raises(ImageError, match="f001.png.*must match"):
        ds.mask("f001")


def test_other_image_types_are_found(tmp_path):
    write_folder_dataset(tmp_path, STUDY5, _items(1, 0))
    Image.fromarray(np.zeros((9, 9), np.uint16) + 4000).save(tmp_path / "images" / "g16.tif")
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "j.jpeg")
    ds = FolderDataset(tmp_path)
    assert {"g16", "j"} <= set(ds.stems("unlabeled"))
    assert ds.image("g16").shape == (9, 9, 3)
