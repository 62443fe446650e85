"""Matrix rows "uploads and data-set images": every odd file through load_image and `python -m engine segment`.

Valid files must give a mask of the input's (display) size; bad ones one clear line naming the file, and the
other files of the same call are still segmented (nothing lost).
"""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from engine.data.images import MAX_PIXELS, ImageError, load_image
from helpers import run_engine

RNG = np.random.default_rng(0)


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _rgb(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width×height with one tiny IDAT: a cheap decompression-bomb stand-in."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _tiff(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr)
    return buf.getvalue()


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide × 24 high, displayed rotated by 90°: 24 wide × 40 high
    return _save(Image.fromarray(_rgb(24, 40)), "JPEG", exif=exif.tobytes())


def _palette_png() -> bytes:
    p = Image.fromarray(RNG.integers(0, 3, (30, 34), dtype=np.uint8), "P")
    p.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    return _save(p, "PNG")


_full_png = _save(Image.fromarray(_rgb(48, 48)), "PNG")
_full_jpg = _save(Image.fromarray(_rgb(48, 48)), "JPEG")

# name → (file name, bytes, (H, W) for valid files | regex the error must match after the file name)
VALID = {
    "16bit_gray_png": ("gray16.png", _save(Image.fromarray(RNG.integers(0, 65535, (33, 40), dtype=np.uint16)), "PNG"), (33, 40)),
    "16bit_rgb_tiff": ("rgb16.tif", _tiff(RNG.integers(0, 65535, (36, 30, 3), dtype=np.uint16)), (36, 30)),
    "float_tiff": ("float32.tif", _tiff(RNG.normal(100, 30, (32, 45)).astype(np.float32)), (32, 45)),
    "palette_png": ("palette.png", _palette_png(), (30, 34)),
    "rgba_png": ("rgba.png", _save(Image.fromarray(RNG.integers(0, 255, (32, 32, 4), dtype=np.uint8), "RGBA"), "PNG"), (32, 32)),
    "grayscale_png": ("gray8.png", _save(Image.fromarray(RNG.integers(0, 255, (40, 32), dtype=np.uint8), "L"), "PNG"), (40, 32)),
    "one_by_one": ("tiny1x1.png", _save(Image.new("RGB", (1, 1), (120, 30, 200)), "PNG"), (1, 1)),
    "exif_rotated_jpeg": ("rotated.jpg", _exif_rotated_jpeg(), (40, 24)),
    "non_ascii_name": ("bildé_眼.png", _save(Image.fromarray(_rgb(32, 32)), "PNG"), (32, 32)),
}
INVALID = {
    "empty_file": ("empty.png", b"", r"file is empty"),
    "text_file": ("notes.png", "just some text, not pixels\n".encode(), r"not a readable image"),
    "pdf_file": ("report.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n%%EOF\n",
                 r"not a readable image"),
    "truncated_png": ("cut.png", _full_png[: len(_full_png) // 2], r"corrupt or truncated"),
    "truncated_jpeg": ("cut.jpg", _full_jpg[: len(_full_jpg) // 2], r"corrupt or truncated"),
    "bomb_20000x20000": ("huge.png", _png_header_only(20000, 20000),
                         rf"400,000,000 pixels, more than the limit of {MAX_PIXELS:,} \(decompression-bomb guard\)"),
    "non_ascii_truncated": ("kaputté_眼.png", _full_png[:60], r"corrupt or truncated"),
}


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
