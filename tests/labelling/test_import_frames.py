"""`data import-frames` on a nested folder with odd, broken and near-duplicate files; the FrameWriter API."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_engine
from PIL import Image

from engine.data.classes import STUDY5, ClassTable
from engine.data.folder import FolderDataset
from engine.data.importing import FrameWriter, import_arrays, thumbnail


def _frame(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


@pytest.fixture()
def messy(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "case1" / "deep").mkdir(parents=True)
    (src / "case2").mkdir()
    Image.fromarray(_frame(0)).save(src / "case1" / "a.png")
    Image.fromarray(_frame(0)).save(src / "case1" / "a_again.jpg", quality=95)  # near-duplicate of a.png
    Image.fromarray(_frame(1, 300, 500)).save(src / "case1" / "deep" / "big.tif")  # other size and format
    Image.fromarray(_frame(2)[..., 0].astype(np.uint16) * 257).save(src / "case2" / "gray16.png")  # 16-bit gray
    Image.fromarray(_frame(3)).save(src / "case2" / "a.bmp")  # format the folder set cannot read: re-encoded
    (src / "case2" / "notes.txt").write_text("not a frame")
    (src / ".DS_Store").write_bytes(b"\0\1")
    (src / "case2" / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(_frame(4)).save(buf, format="PNG")
    (src / "case2" / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (src / "case2" / "garbage.jpg").write_bytes(b"this is not a jpeg at all")
    return src


def test_import_frames_cli_nested_folder(messy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_engine("data", "import-frames", str(messy), str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary == {"out": str(out), "written": 4, "near_duplicates": 1, "skipped": 2, "errors": 3}
    err = r.stderr.splitlines()
    assert "skipped case2/notes.txt: not an image (.txt)" in err and "skipped .DS_Store: hidden file" in err
    assert any(line.startswith("near-duplicate case1/a_again.jpg: like case1__a") for line in err)
    problems = [line for line in err if line.startswith("error: ")]
    assert len(problems) == 3  # one line each
    assert any("empty.png: file is empty" in p for p in problems)
    assert any("truncated.png" in p and "truncated" in p for p in problems)
    assert any("garbage.jpg: not a readable image" in p for p in problems)
    ds = FolderDataset(out)
    assert ds.classes == STUDY5  # the default class table, written at import
    assert sorted(ds.stems("unlabeled")) == ["case1__a", "case1__deep__big", "case2__a", "case2__gray16"]
    assert not any(ds.has_mask(s) for s in ds.stems("unlabeled")) and ds.stems("train") == []
    assert ds.image_path("case1__deep__big").suffix == ".tif" and ds.image("case1__deep__big").shape == (300, 500, 3)
    assert ds.image_path("case2__a").suffix == ".png"  # BMP re-encoded losslessly
    assert np.array_equal((ds.image("case2__a") * 255).round().astype(np.uint8), _frame(3))
    # appending the same folder again adds nothing: every frame nearly duplicates one already there
    r2 = run_engine("data", "import-frames", str(messy), str(out), "--no-progress", "--append")
    assert r2.returncode == 2 and json.loads(r2.stdout)["near_duplicates"] == 5
    r3 = run_engine("data", "import-frames", str(messy), str(out), "--no-progress")
    assert r3.returncode == 2 and r3.stderr.strip().splitlines()[-1].startswith("error: ") and "--append" in r3.stderr


def test_import_frames_class_table_and_no_dedup(messy: Path, tmp_path: Path) -> None:
    r = run_engine("data", "import-frames", str(messy), str(tmp_path / "o"), "--no-progress",
                   "--class-names", "tool,tissue", "--dedup", "0")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["written"] == 5
    assert ClassTable.from_json(tmp_path / "o" / "classes.json").names == ["tool", "tissue"]
    bad = run_engine("data", "import-frames", str(tmp_path / "nope"), str(tmp_path / "o2"))
    assert bad.returncode == 2 and bad.stderr.strip() == f"error: {tmp_path / 'nope'}: not a folder of frames"


def test_import_arrays_api_for_video_importers(tmp_path: Path) -> None:
    a, b = _frame(10), _frame(11)
    still = np.clip(a.astype(int) + 1, 0, 255).astype(np.uint8)  # one grey level brighter: a duplicate
    report = import_arrays([("v_000000", a), ("v_000001", still), ("v_000002", b)], tmp_path / "v", threshold=0.01)
    assert report.written == ["v_000000", "v_000002"]
    assert report.duplicates[0][:2] == ("v_000001", "v_000000") and report.duplicates[0][2] == pytest.approx(1 / 255, abs=1e-4)
    w = FrameWriter(tmp_path / "v", threshold=0.01, append=True)
    assert not w.add("v_000003", a) and w.add("v_000000", _frame(12)) and w.report.written == ["v_000000_2"]


def test_thumbnail_distance_of_reencoding_is_small() -> None:
    a = _frame(5, 240, 320)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=90)
    jpeg = np.asarray(Image.open(buf))
    assert np.abs(thumbnail(a) - thumbnail(jpeg)).mean() < 1 / 255
    assert np.abs(thumbnail(a) - thumbnail(_frame(6, 240, 320))).mean() > 0.01
