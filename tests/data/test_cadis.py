"""CaDIS layout, merge tables and video split on a tiny fixture."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.data.cadis import CADIS_CLASSES, MERGES, VIDEO_SPLIT, CadisDataset, export_cadis, merge_classes, merge_lut
from engine.data.folder import FolderDataset


@pytest.mark.parametrize("merge", sorted(MERGES))
def test_every_id_mapped_exactly_once(merge):
    spec = MERGES[merge]
    listed = [i for _, ids in spec["classes"] for i in ids] + list(spec["ignore"])
    assert sorted(listed) == list(range(36))
    lut = merge_lut(merge)
    assert (lut[36:] == 255).all()
    assert merge_classes(merge).num_classes == len(spec["classes"])


def test_merge_contents():
    assert len(CADIS_CLASSES) == 36 and CADIS_CLASSES[35] == "iris hooks"
    assert [merge_classes(m).num_classes for m in ("study5", "task1", "task2", "task3")] == [5, 8, 17, 25]
    s5 = merge_lut("study5")
    assert s5[0] == 0 and s5[4] == 1 and s5[6] == 2 and s5[5] == s5[1] == 3 and s5[2] == 255
    assert all(s5[i] == 4 for i in [3] + list(range(7, 36)))
    t2 = merge_lut("task2")
    assert {i for i in range(36) if t2[i] == 255} == {25, 26, 29, 30, 31, 34, 35}
    assert t2[20] == t2[32] == 7 and t2[33] == 9
    t3 = merge_lut("task3")
    assert list(t3[:25]) == list(range(25)) and (t3[25:36] == 255).all()
    assert merge_classes("study5").names == ["pupil", "iris", "cornea", "skin", "instrument"]
    assert sorted(sum(VIDEO_SPLIT.values(), [])) == list(range(1, 26))


@pytest.fixture
def cadis_root(tmp_path):
    rng = np.random.default_rng(0)
    for video in (1, 5, 2):  # train, val, test
        for frame in range(3):
            d = tmp_path / f"Video{video:02d}"
            (d / "Images").mkdir(parents=True, exist_ok=True)
            (d / "Labels").mkdir(exist_ok=True)
            name = f"Video{video}_frame{frame:06d}.png"
            Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(d / "Images" / name)
            if frame < 2:  # the last frame of each video is unlabelled
                Image.fromarray(rng.integers(0, 36, (6, 8), dtype=np.uint8)).save(d / "Labels" / name)
    return tmp_path


def test_cadis_dataset(cadis_root):
    ds = CadisDataset(cadis_root, merge="study5")
    assert len(ds.stems("train")) == 2 and all(s.startswith("Video01_") for s in ds.stems("train"))
    assert len(ds.stems("val")) == 2 and len(ds.stems("test")) == 2
    assert len(ds.stems("unlabeled")) == 3
    stem = ds.stems("test")[0]
    assert np.array_equal(ds.mask(stem), merge_lut("study5")[ds.raw_mask(stem)])
    assert ds.image(stem).shape == (6, 8, 3) and ds.has_mask(stem)


def test_export_cadis(cadis_root, tmp_path):
    out = export_cadis(cadis_root, tmp_path / "out", merge="task2", n_train=1, n_test=None, size=4)
    fd = FolderDataset(out)
    assert fd.classes.num_classes == 17
    assert len(fd.stems("train")) == 1 and len(fd.stems("test")) == 2 and len(fd.stems("unlabeled")) == 3
    m = fd.mask(fd.stems("test")[0])
    assert m.shape == (4, 4) and set(np.unique(m)) <= set(range(17)) | {255}
