"""Decoding matrix for load_image / load_mask / save_png_atomic."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from engine.data.classes import STUDY5
from engine.data.images import ImageError, image_size, load_image, load_mask, save_png_atomic


def _png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _check(arr: np.ndarray, hw: tuple[int, int]) -> None:
    assert arr.dtype == np.float32 and arr.shape == (*hw, 3)
    assert arr.min() >= 0.0 and arr.max() <= 1.0


def test_gray_8bit(tmp_path):
    p = tmp_path / "g.png"
    Image.fromarray(np.full((5, 7), 51, np.uint8)).save(p)
    arr = load_image(p)
    _check(arr, (5, 7))
    assert np.allclose(arr, 0.2)


def test_gray_16bit_png():
    a = np.array([[0, 65535], [32768, 1000]], np.uint16)
    arr = load_image(_png_bytes(Image.fromarray(a)))
    _check(arr, (2, 2))
    assert arr[0, 1, 0] == pytest.approx(1.0) and arr[1, 0, 2] == pytest.approx(32768 / 65535)


def test_16bit_big_endian_mode():
    im = Image.frombytes("I;16B", (2, 1), np.array([[0, 65535]], ">u2").tobytes())
    arr = load_image(_png_bytes(im))
    assert arr[0, 1, 0] == pytest.approx(1.0) and arr[0, 0, 0] == 0.0


def test_rgba_composited_over_black():
    a = np.zeros((2, 2, 4), np.uint8)
    a[..., 0] = 255
    a[0, 0, 3] = 255
    a[0, 1, 3] = 0
    arr = load_image(_png_bytes(Image.fromarray(a, "RGBA")))
    assert np.allclose(arr[0, 0], [1, 0, 0]) and np.allclose(arr[0, 1], 0)


def test_gray_alpha_and_palette():
    la = Image.fromarray(np.stack([np.full((3, 3), 200, np.uint8), np.full((3, 3), 255, np.uint8)], 2), "LA")
    _check(load_image(_png_bytes(la)), (3, 3))
    p = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    arr = load_image(_png_bytes(p))
    assert np.allclose(arr[0, 0], [1, 0, 0]) and np.allclose(arr[0, 1], [0, 0, 1])


def test_tiff_16bit_rgb_and_float(tmp_path):
    rgb16 = np.zeros((4, 5, 3), np.uint16)
    rgb16[..., 1] = 65535
    tifffile.imwrite(tmp_path / "a.tif", rgb16)
    arr = load_image(tmp_path / "a.tif")
    _check(arr, (4, 5))
    assert np.allclose(arr[..., 1], 1.0) and np.allclose(arr[..., 0], 0.0)
    unit = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    tifffile.imwrite(tmp_path / "u.tif", unit)
    assert np.allclose(load_image(tmp_path / "u.tif")[..., 0], unit)  # already in [0,1]: kept
    wide = unit * 1000 + 50
    tifffile.imwrite(tmp_path / "w.tif", wide)
    out = load_image(tmp_path / "w.tif")[..., 0]
    assert out.min() == 0.0 and out.max() == pytest.approx(1.0)  # min/max normalised


def test_exif_orientation_respected():
    im = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes())
    arr = load_image(buf.getvalue())
    assert arr.shape == (20, 10, 3)
    assert image_size(buf.getvalue()) == (20, 10)


def test_one_pixel_and_other_formats():
    _check(load_image(_png_bytes(Image.new("RGB", (1, 1), (9, 9, 9)))), (1, 1))
    for fmt in ("BMP", "WEBP", "JPEG"):
        buf = io.BytesIO()
        Image.new("RGB", (6, 4), (10, 200, 30)).save(buf, format=fmt)
        _check(load_image(buf.getvalue(), name=f"x.{fmt}"), (4, 6))


def test_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png.*empty"):
        load_image(empty)
    text = tmp_path / "notes.png"
    text.write_text("hello, not an image")
    with pytest.raises(ImageError, match="notes.png.*not a readable image"):
        load_image(text)
    with pytest.raises(ImageError, match="paper.pdf"):
        load_image(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>>", name="paper.pdf")
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_rejected(fmt):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format=fmt)
    data = buf.getvalue()
    with pytest.raises(ImageError, match="cut.*(truncated|corrupt)"):
        load_image(data[: len(data) // 2], name=f"cut.{fmt.lower()}")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with one tiny IDAT (cheap bomb fixture)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_too_many_pixels_refused_before_decoding():
    with pytest.raises(ImageError, match="bomb"):
        load_image(_png_header_only(20000, 20000), name="huge.png")
    with pytest.raises(ImageError, match="small.png.*limit"):
        load_image(_png_bytes(Image.new("RGB", (20, 20))), name="small.png", max_pixels=100)


def test_load_mask_modes_and_palette():
    ids = np.array([[0, 1], [4, 255]], np.uint8)
    assert np.array_equal(load_mask(_png_bytes(Image.fromarray(ids))), ids)
    p = Image.fromarray(ids, "P")
    p.putpalette(list(range(256)) * 3)
    assert np.array_equal(load_mask(_png_bytes(p)), ids)
    i16 = Image.fromarray(ids.astype(np.uint16))
    assert np.array_equal(load_mask(_png_bytes(i16)), ids)
    colour = STUDY5.colorize(np.array([[0, 1], [3, 4]], np.uint8))
    data = _png_bytes(Image.fromarray(colour))
    with pytest.raises(ImageError, match="colour"):
        load_mask(data, name="rgb_mask.png")
    assert np.array_equal(load_mask(data, palette=STUDY5), [[0, 1], [3, 4]])
    colour[0, 0] = (1, 2, 3)
    with pytest.raises(ImageError, match=r"\(1,2,3\)"):
        load_mask(_png_bytes(Image.fromarray(colour)), palette=STUDY5)


def test_mask_16bit_out_of_range():
    big = Image.fromarray(np.array([[0, 300]], np.uint16))
    with pytest.raises(ImageError, match="0..255"):
        load_mask(_png_bytes(big), name="m.png")


def test_save_png_atomic(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    p = save_png_atomic(tmp_path / "sub" / "m.png", a)
    assert np.array_equal(load_mask(p), a)
    assert [f.name for f in p.parent.iterdir()] == ["m.png"]
    with pytest.raises(ValueError):
        save_png_atomic(tmp_path / "bad.png", a.astype(np.float32))
