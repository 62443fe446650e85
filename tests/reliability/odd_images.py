"""The catalogue of odd image files the reliability matrix feeds to every entry point (CLI, data sets, dashboard).

VALID: name → (file name, bytes, (H, W) after decoding); INVALID: name → (file name, bytes, regex the error must match).
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import tifffile
from PIL import Image

from engine.data.images import MAX_PIXELS

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
