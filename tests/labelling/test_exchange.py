"""Export → import round trips (COCO, CVAT masks) are identical; the nnU-Net v2 layout follows its documentation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_engine
from PIL import Image

from engine.data.folder import FolderDataset


def _same(a: Path, b: Path) -> None:
    da, db = FolderDataset(a), FolderDataset(b)
    assert da.classes == db.classes
    labelled = [s for s in da.stems("unlabeled") if da.has_mask(s)]
    assert sorted(s for s in db.stems("unlabeled")) == sorted(labelled)
    for s in labelled:
        assert np.array_equal(da.mask(s), db.mask(s)), s
        assert np.array_equal(da.image(s), db.image(s)), s
    assert db.stems("train") == da.stems("train") and db.stems("test") == da.stems("test")


@pytest.mark.parametrize("fmt", ["coco", "cvat-mask"])
def test_round_trip_is_identical(loop_data: Path, tmp_path: Path, fmt: str) -> None:
    m = np.asarray(Image.open(next((loop_data / "masks").iterdir()))).copy()
    m[:3, :3] = 255  # ignore pixels survive the trip
    Image.fromarray(m).save(next((loop_data / "masks").iterdir()))
    r = run_engine("data", "export", str(loop_data), "--format", fmt, str(tmp_path / "x"))
    assert r.returncode == 0, r.stderr
    r = run_engine("data", "import-masks", str(tmp_path / "x"), str(tmp_path / "back"), "--format", fmt)
    assert r.returncode == 0, r.stderr
    _same(loop_data, tmp_path / "back")


def test_cvat_layout(loop_data: Path, tmp_path: Path) -> None:
    from engine.data.export_formats import export_dataset

    export_dataset(loop_data, "cvat-mask", tmp_path / "c")
    lines = (tmp_path / "c" / "labelmap.txt").read_text().splitlines()
    assert lines[:3] == ["# label:color_rgb:parts:actions", "background:0,0,0::", "pupil:255,0,0::"]
    stems = (tmp_path / "c" / "ImageSets" / "Segmentation" / "default.txt").read_text().split()
    assert len(stems) == 6 and all((tmp_path / "c" / "SegmentationClass" / f"{s}.png").is_file() for s in stems)
    assert Image.open(tmp_path / "c" / "SegmentationClass" / f"{stems[0]}.png").mode == "RGB"


def test_cvat_import_rejects_unknown_colour(loop_data: Path, tmp_path: Path) -> None:
    from engine.data.export_formats import export_dataset

    export_dataset(loop_data, "cvat-mask", tmp_path / "c")
    p = next((tmp_path / "c" / "SegmentationClass").iterdir())
    arr = np.asarray(Image.open(p)).copy()
    arr[0, 0] = (1, 2, 3)  # an anti-aliased edge colour, say
    Image.fromarray(arr).save(p)
    r = run_engine("data", "import-masks", str(tmp_path / "c"), str(tmp_path / "b"), "--format", "cvat-mask")
    assert r.returncode == 2 and r.stderr.strip() == f"error: {p}: colour(s) [(1, 2, 3)] are not in labelmap.txt"


def test_nnunet_layout(loop_data: Path, tmp_path: Path) -> None:
    m = np.asarray(Image.open(next((loop_data / "masks").iterdir()))).copy()
    m[0, 0] = 255
    Image.fromarray(m).save(next((loop_data / "masks").iterdir()))
    r = run_engine("data", "export", str(loop_data), "--format", "nnunet", str(tmp_path / "raw"),
                   "--dataset-id", "7", "--dataset-name", "Cataract")
    assert r.returncode == 0, r.stderr
    root = tmp_path / "raw" / "Dataset007_Cataract"
    doc = json.loads((root / "dataset.json").read_text())
    # documentation/dataset_format.md: channel_names, labels with background 0 and consecutive ids, numTraining,
    # file_ending; documentation/ignore_label.md: "ignore" is the highest label
    assert doc["channel_names"] == {"0": "R", "1": "G", "2": "B"} and doc["file_ending"] == ".png"
    assert doc["labels"] == {"background": 0, "pupil": 1, "iris": 2, "cornea": 3, "skin": 4, "instrument": 5, "ignore": 6}
    assert doc["numTraining"] == 3 and doc["diffseg_label_map"]["255"] == 6 and doc["diffseg_label_map"]["0"] == 1
    ds = FolderDataset(loop_data)
    for stem in ds.stems("train"):
        img = Image.open(root / "imagesTr" / f"{stem}_0000.png")
        lab = np.asarray(Image.open(root / "labelsTr" / f"{stem}.png"))
        assert img.mode == "RGB" and img.size == (lab.shape[1], lab.shape[0])  # RGB in ONE file (natural images)
        expect = np.where(ds.mask(stem) == 255, 6, ds.mask(stem).astype(np.int64) + 1)
        assert np.array_equal(lab, expect) and lab.dtype == np.uint8
    assert sorted(p.name for p in (root / "imagesTs").iterdir()) == sorted(f"{s}_0000.png" for s in ds.stems("test"))
    assert len(list((root / "labelsTr").iterdir())) == 3


def test_nnunet_background_class_maps_to_zero(tiny_data: Path, tmp_path: Path) -> None:
    from engine.data.export_formats import export_dataset

    info = export_dataset(tiny_data, "nnunet", tmp_path / "raw")
    assert info["labels"] == {"background": 0, "disc": 1}
