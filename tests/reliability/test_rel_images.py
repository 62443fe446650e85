"""Matrix rows "uploads and data-set images": every odd file through load_image and `python -m engine segment`.

Valid files must give a mask of the input's (display) size; bad ones one clear line naming the file, and the
other files of the same call are still segmented (nothing lost).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.images import ImageError, load_image
from helpers import run_engine
from odd_images import INVALID, VALID


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("odd_images")
    for fname, data, _ in list(VALID.values()) + list(INVALID.values()):
        (d / fname).write_bytes(data)
    return d


@pytest.mark.parametrize("case", sorted(VALID))
def test_load_image_valid(case: str, image_dir: Path) -> None:
    fname, _, hw = VALID[case]
    arr = load_image(image_dir / fname)
    assert arr.shape == (*hw, 3) and arr.dtype == np.float32
    assert np.isfinite(arr).all() and arr.min() >= 0.0 and arr.max() <= 1.0


@pytest.mark.parametrize("case", sorted(INVALID))
def test_load_image_invalid(case: str, image_dir: Path) -> None:
    fname, _, pattern = INVALID[case]
    with pytest.raises(ImageError) as info:
        load_image(image_dir / fname)
    msg = str(info.value)
    assert fname in msg, msg  # which file
    assert __import__("re").search(pattern, msg), msg  # what is wrong
    assert "\n" not in msg


def test_bomb_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pixel limit is checked on the header: Pillow's decoder is never reached."""
    from PIL import ImageFile

    def boom(self, *a, **k):  # noqa: ANN001
        raise AssertionError("decoder ran on a refused image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)
    with pytest.raises(ImageError, match="decompression-bomb"):
        load_image(INVALID["bomb_20000x20000"][1], name="huge.png")


@pytest.fixture(scope="module")
def segmented(rel_clf: Path, image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One `segment` call over every file, valid and bad mixed: {"ok": {file name: info}, "errors": [...], "res"}."""
    out = tmp_path_factory.mktemp("segmented")
    names = [f for f, _, _ in VALID.values()] + [f for f, _, _ in INVALID.values()]
    res = run_engine("segment", "--classifier", rel_clf, "--no-cache", "--out", out, *[image_dir / n for n in names])
    ok = {}
    for line in res.stdout.strip().splitlines():
        info = json.loads(line)
        ok[Path(info["input"]).name] = info
    errors = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error:")]
    return {"ok": ok, "errors": errors, "res": res, "out": out}


def test_segment_mixed_batch_exit_code(segmented: dict) -> None:
    res = segmented["res"]
    assert res.returncode == 2, res.stderr[-2000:]  # some files were bad
    assert "Traceback" not in res.stderr
    assert len(segmented["errors"]) == len(INVALID), segmented["errors"]
    assert set(segmented["ok"]) == {f for f, _, _ in VALID.values()}  # every valid file still segmented


@pytest.mark.parametrize("case", sorted(VALID))
def test_segment_valid_gives_mask_of_input_size(case: str, segmented: dict) -> None:
    fname, _, hw = VALID[case]
    info = segmented["ok"].get(fname)
    assert info is not None, segmented["errors"]
    assert tuple(info["size"]) == hw
    for key in ("mask", "color", "overlay", "uncertainty"):
        im = Image.open(info[key])
        assert (im.height, im.width) == hw, (key, im.size)
    mask = np.asarray(Image.open(info["mask"]))
    assert mask.dtype == np.uint8 and mask.max() < 256


@pytest.mark.parametrize("case", sorted(INVALID))
def test_segment_invalid_one_line_naming_file(case: str, segmented: dict) -> None:
    import re

    fname, _, pattern = INVALID[case]
    lines = [ln for ln in segmented["errors"] if fname in ln]
    assert len(lines) == 1, segmented["errors"]
    assert re.search(pattern, lines[0]), lines[0]
    assert not list(segmented["out"].glob(f"{Path(fname).stem}_*.png"))  # no partial outputs for a bad file


def test_segment_single_bad_file_exit_2(rel_clf: Path, image_dir: Path, tmp_path: Path) -> None:
    from rel_helpers import one_line_error

    res = run_engine("segment", "--classifier", rel_clf, "--no-cache", "--out", tmp_path, image_dir / "notes.png")
    one_line_error(res, "notes.png", "not a readable image")
