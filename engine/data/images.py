"""Robust image and mask decoding shared by the CLI, the dashboard uploads and every data set.

Policy, so every caller sees the same pixels:

* ``load_image`` always returns float32 ``HxWx3`` RGB in ``[0, 1]``.
* Gray images are replicated to three channels; 16-bit data is divided by 65535.
* Alpha is composited over **black** (``rgb * alpha``): microscope frames have a dark
  surround, so black is the least surprising background for transparent regions.
* Float images (e.g. 32-bit TIFF) are kept as they are when they already lie in ``[0, 1]``,
  otherwise they are rescaled by their own min/max (a constant image becomes 0).
* EXIF orientation is applied, so the array matches what an image viewer shows.
* Truncated or corrupt files raise :class:`ImageError`; partial decodes are never accepted.
* Decompression-bomb guard: the pixel count is read from the header (Pillow opens lazily)
  and anything above ``max_pixels`` (default :data:`MAX_PIXELS`) is refused before decoding.
* Shape guard: a frame whose long side is more than :data:`MAX_ASPECT_RATIO` times its short side is
  refused from the header too. Every model path resizes the short side to the model size, so the
  aspect ratio alone decides how large the resized frame and the UNet's attention get (a 120-byte
  4×2000 PNG would otherwise ask attention for hundreds of GB).
"""
from __future__ import annotations

import io
import logging
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from engine.atomic import write_bytes_atomic

if TYPE_CHECKING:
    from engine.data.classes import ClassTable

log = logging.getLogger(__name__)

#: Largest accepted image, in pixels (40 MP ~ a 7300x5500 photo). A float32 RGB copy of such
#: an image is ~480 MB, which is the most we are willing to allocate for a single upload.
MAX_PIXELS = 40_000_000

#: Largest accepted long side / short side ratio. Video frames are 4:3 to 16:9 (side-by-side stereo
#: 32:9 = 3.6); at 4:1 the resized frame is at most 4 model sizes long and attention 16× a square's.
MAX_ASPECT_RATIO = 4.0

# Pillow's own bomb check warns above MAX_IMAGE_PIXELS and raises above twice that. We check the
# header ourselves against ``max_pixels`` first; Pillow's limit is kept at least as large as ours
# so that its check only fires for callers who raise ``max_pixels`` (and is then reported cleanly).
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class ImageError(ValueError):
    """An image or mask could not be used; the message names the file and the problem."""


def _read_source(source: str | Path | bytes, name: str | None) -> tuple[bytes, str]:
    """Return the raw bytes and a display name, turning I/O problems into ImageError."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name or "<uploaded bytes>"
    path = Path(source)
    label = name or str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{label}: file does not exist") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a directory, not an image file") from None
    except OSError as exc:
        raise ImageError(f"{label}: cannot read file ({exc})") from None
    return data, label


def _check_size(width: int, height: int, label: str, max_pixels: int) -> None:
    """Refuse zero-size images, images larger than ``max_pixels`` (bomb guard) and extreme shapes."""
    if width <= 0 or height <= 0:
        raise ImageError(f"{label}: image has zero size ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"{label}: image is {width}x{height} = {width * height:,} pixels, more than the "
            f"limit of {max_pixels:,} (decompression-bomb guard); downscale it first"
        )
    check_aspect(width, height, label)


def check_aspect(width: int, height: int, label: str, max_ratio: float = MAX_ASPECT_RATIO) -> None:
    """Refuse a frame whose long side exceeds `max_ratio` times its short side (ImageError naming it)."""
    ratio = max(width, height) / max(min(width, height), 1)
    if ratio > max_ratio:
        raise ImageError(
            f"{label}: image is {width}x{height}, an aspect ratio of {ratio:,.1f}:1, more than the limit of "
            f"{max_ratio:g}:1 (resized to the model it would need too much memory); crop it first"
        )


def _open_pil(data: bytes, label: str, max_pixels: int) -> Image.Image:
    """Open, size-check and fully decode with Pillow; EXIF orientation applied."""
    if not data:
        raise ImageError(f"{label}: file is empty")
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # never accept a partial decode
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            _check_size(im.width, im.height, label, max_pixels)
            im.load()
            im = ImageOps.exif_transpose(im)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own check fires inside Image.open (before ours) for very large headers: same message as ours
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ImageError(f"{label}: image has {size}, more than the limit of {max_pixels:,} "
                         "(decompression-bomb guard); downscale it first") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{label}: not a readable image (expected PNG, JPEG, TIFF, BMP or WebP)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise ImageError(f"{label}: corrupt or truncated image ({exc})") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    return im


def _read_tiff(data: bytes, label: str, max_pixels: int) -> np.ndarray:
    """Decode a TIFF Pillow cannot handle (16-bit or float RGB) with tifffile."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            shape = page.shape
            if len(shape) < 2:
                raise ImageError(f"{label}: TIFF page has unsupported shape {shape}")
            if len(shape) == 3 and shape[0] in (1, 2, 3, 4) and shape[-1] not in (1, 2, 3, 4):
                height, width = shape[1], shape[2]  # planar (C, H, W)
            else:
                height, width = shape[0], shape[1]
            _check_size(int(width), int(height), label, max_pixels)
            arr = page.asarray()
    except ImageError:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise ImageError(f"{label}: corrupt or unsupported TIFF ({exc})") from None
    if arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4) and arr.shape[-1] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    return arr


def _scale_to_unit(arr: np.ndarray, label: str) -> np.ndarray:
    """Map integer or float samples to float32 in [0, 1] (float rule in the module docstring)."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype in (np.uint16, np.dtype(">u2"), np.dtype("<u2")):
        return arr.astype(np.float32) / 65535.0
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo >= 0 and hi <= 255 and arr.dtype.itemsize == 1:
            return arr.astype(np.float32) / 255.0
        if lo >= 0 and hi <= 65535:
            return arr.astype(np.float32) / 65535.0
        arr = arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating):
        f = arr.astype(np.float64)
        if not np.all(np.isfinite(f)):
            raise ImageError(f"{label}: image contains NaN or infinite values")
        lo, hi = float(f.min()), float(f.max())
        if lo >= 0.0 and hi <= 1.0:
            return f.astype(np.float32)
        if hi - lo <= 0:
            return np.zeros_like(f, dtype=np.float32)
        return ((f - lo) / (hi - lo)).astype(np.float32)
    raise ImageError(f"{label}: unsupported sample type {arr.dtype}")


def _channels_to_rgb(arr: np.ndarray, label: str) -> np.ndarray:
    """Turn HxW, HxWx1..4 float arrays into HxWx3, compositing alpha over black."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ImageError(f"{label}: unsupported array shape {arr.shape}")
    c = arr.shape[2]
    if c == 1:
        rgb = np.repeat(arr, 3, axis=2)
    elif c == 2:
        rgb = np.repeat(arr[..., :1] * arr[..., 1:2], 3, axis=2)
    elif c == 3:
        rgb = arr
    elif c == 4:
        rgb = arr[..., :3] * arr[..., 3:4]
    else:
        raise ImageError(f"{label}: unsupported number of channels ({c})")
    return np.ascontiguousarray(rgb, dtype=np.float32)


def _pil_to_unit(im: Image.Image, label: str) -> np.ndarray:
    """Convert a decoded Pillow image of any mode to an HxW(xC) float array in [0, 1]."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    return _scale_to_unit(np.asarray(im), label)


def load_image(
    source: str | Path | bytes, name: str | None = None, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Decode any supported image to float32 HxWx3 RGB in [0, 1], or raise ImageError."""
    data, label = _read_source(source, name)
    if not data:
        raise ImageError(f"{label}: file is empty")
    try:
        im = _open_pil(data, label, max_pixels)
        arr = _pil_to_unit(im, label)
    except ImageError:
        if not data.startswith(_TIFF_MAGIC):
            raise
        log.debug("%s: Pillow could not decode TIFF, trying tifffile", label)
        arr = _scale_to_unit(_read_tiff(data, label, max_pixels), label)
    rgb = _channels_to_rgb(arr, label)
    _check_size(rgb.shape[1], rgb.shape[0], label, max_pixels)
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def image_size(source: str | Path | bytes, name: str | None = None) -> tuple[int, int]:
    """(H, W) as ``load_image`` would return it, from the header only when Pillow can read it."""
    data, label = _read_source(source, name)
    if not data:
        raise ImageError(f"{label}: file is empty")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except Exception:
        return load_image(data, label).shape[:2]  # let the full decoder report the problem
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _rgb_mask_to_ids(rgb: np.ndarray, palette: ClassTable, label: str) -> np.ndarray:
    """Map exact palette colours to class ids (black stays ignore only if in the table)."""
    rgb = rgb[..., :3].astype(np.uint32)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    colors = palette.colors.astype(np.uint32)
    table_codes = (colors[:, 0] << 16) | (colors[:, 1] << 8) | colors[:, 2]
    out = np.full(codes.shape, 255, dtype=np.uint8)
    known = np.zeros(codes.shape, dtype=bool)
    for cid, code in enumerate(table_codes):
        hit = codes == code
        out[hit] = cid
        known |= hit
    if not known.all():
        bad = np.unique(codes[~known])
        shown = ", ".join(f"({c >> 16},{(c >> 8) & 255},{c & 255})" for c in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ImageError(
            f"{label}: {len(bad)} mask colour(s) not in the class palette: {shown}{more}"
        )
    return out


def load_mask(
    source: str | Path | bytes,
    name: str | None = None,
    palette: ClassTable | None = None,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode a label mask to uint8 HxW class ids (255 = ignore), or raise ImageError.

    Index masks (L, P, I, I;16) are read as ids directly. RGB masks are only accepted when
    ``palette`` is given, and then every colour must match a class colour exactly.
    """
    data, label = _read_source(source, name)
    im = _open_pil(data, label, max_pixels)
    if im.mode in ("L", "P", "1"):
        arr = np.asarray(im)
    elif im.mode == "LA":
        arr = np.asarray(im)[..., 0]
    elif im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ImageError(
                f"{label}: mask values must be 0..255 class ids, found range "
                f"{int(arr.min())}..{int(arr.max())}"
            )
    elif im.mode in ("RGB", "RGBA"):
        if palette is None:
            raise ImageError(
                f"{label}: mask is a colour ({im.mode}) image; save masks as 8-bit index PNGs "
                "(one class id per pixel) or pass the class palette to map colours to ids"
            )
        return _rgb_mask_to_ids(np.asarray(im), palette, label)
    else:
        raise ImageError(f"{label}: unsupported mask mode {im.mode!r}")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def save_png_atomic(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 HxW / HxWx3 / HxWx4 array as PNG atomically (engine.atomic: no torn files, umask mode)."""
    path = Path(path)
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype != np.uint8:
        raise ValueError(f"save_png_atomic({path}): expected uint8 array, got {arr.dtype}")
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(f"save_png_atomic({path}): unsupported shape {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())  # temp file + fsync + rename, normal file mode
    return path
