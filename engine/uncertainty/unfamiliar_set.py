"""An unfamiliar-input test set built by code: plausible user mistakes, plus mild shifts that must NOT be flagged.

Unfamiliar kinds: other scenes (a landscape), other modalities (an X-ray-like grey image, stained-cell
microscopy), documents and screenshots (text rendered with PIL), a gradient with simple shapes, and
degraded versions of real frames (heavy blur, over/under-exposure, a corner crop blown up, colour
inversion). Mild kinds (realistic variation: slight blur, JPEG at quality 60, brightness ±10 %) start from
the same frames. Everything is drawn from `np.random.default_rng(seed)`; no downloads.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

Img = np.ndarray  # HxWx3 float32 in [0,1]
UNFAMILIAR_SYNTH = ("landscape", "xray", "microscopy", "document", "screenshot", "shapes")
UNFAMILIAR_FROM_FRAMES = ("heavy_blur", "overexposed", "underexposed", "corner_crop", "inverted")
MILD = ("slight_blur", "jpeg_q60", "brightness")
WORDS = ["patient", "consent", "form", "surgery", "eye", "lens", "cataract", "procedure", "date", "signature", "clinic", "report", "result", "normal", "follow", "up", "visit", "left", "right", "dose", "drop", "hospital", "department", "review", "page", "total", "item", "amount"]


@dataclass
class TestImage:
    """One image of the set: name, kind, group ('unfamiliar' or 'mild') and pixels."""

    name: str
    kind: str
    group: str
    image: Img


def _f(a: Image.Image | np.ndarray) -> Img:
    arr = np.asarray(a, dtype=np.float32)
    return np.clip(arr / 255.0 if arr.max() > 1.5 else arr, 0, 1)


def _u8(img: Img) -> Image.Image:
    return Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8))


def gradient_shapes(width: int = 640, height: int = 480) -> Img:
    """The issue's example: a colour gradient, a beige disc with a brown centre, a green rectangle, a yellow
    triangle and a grey line."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width, yy / height, 1 - xx / width * 0.6], -1) * 0.8 + 0.1
    im = _u8(base)
    d = ImageDraw.Draw(im)
    cx, cy, r = width * 0.35, height * 0.5, min(width, height) * 0.25
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(225, 205, 170))
    d.ellipse([cx - r * 0.35, cy - r * 0.35, cx + r * 0.35, cy + r * 0.35], fill=(110, 70, 40))
    d.rectangle([width * 0.68, height * 0.12, width * 0.92, height * 0.38], fill=(40, 160, 60))
    d.polygon([(width * 0.7, height * 0.85), (width * 0.9, height * 0.85), (width * 0.8, height * 0.55)],
              fill=(240, 210, 40))
    d.line([(width * 0.05, height * 0.92), (width * 0.6, height * 0.08)], fill=(128, 128, 128), width=max(2, width // 120))
    return _f(im)


def _landscape(rng: np.random.Generator, s: int) -> Img:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    sky = np.stack([0.35 + 0.3 * yy, 0.55 + 0.3 * yy, 0.95 - 0.1 * yy], -1)
    horizon = 0.55 + 0.1 * np.sin(xx * rng.uniform(4, 9) + rng.uniform(0, 6))
    ground = np.stack([0.25 + 0.1 * rng.random((s, s)), 0.55 + 0.1 * rng.random((s, s)), 0.2 + 0 * yy], -1)
    img = np.where((yy > horizon)[..., None], ground, sky)
    im = _u8(img)
    d = ImageDraw.Draw(im)
    sx, sy = rng.uniform(0.1, 0.9) * s, rng.uniform(0.08, 0.3) * s
    d.ellipse([sx - s * 0.06, sy - s * 0.06, sx + s * 0.06, sy + s * 0.06], fill=(255, 240, 150))
    for _ in range(int(rng.integers(2, 6))):
        tx, ty = rng.uniform(0, s), rng.uniform(0.6, 0.9) * s
        d.rectangle([tx - 2, ty - s * 0.05, tx + 2, ty + s * 0.05], fill=(90, 60, 30))
        d.ellipse([tx - s * 0.06, ty - s * 0.16, tx + s * 0.06, ty - s * 0.03], fill=(30, 110, 40))
    return _f(im)


def _xray(rng: np.random.Generator, s: int) -> Img:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    body = np.exp(-(((xx - 0.5) / 0.38) ** 2 + ((yy - 0.55) / 0.5) ** 2) ** 2) * 0.55
    lungs = sum(np.exp(-(((xx - cx) / 0.13) ** 2 + ((yy - 0.5) / 0.25) ** 2) ** 2) for cx in (0.33, 0.67)) * -0.3
    ribs = 0.18 * (np.sin(yy * s * rng.uniform(0.35, 0.5)) > 0.6) * (body > 0.2)
    spine = 0.35 * np.exp(-((xx - 0.5) / 0.03) ** 2) * (body > 0.1)
    g = np.clip(body + lungs + ribs + spine + rng.normal(0, 0.02, (s, s)), 0, 1)
    g = np.asarray(_u8(g).filter(ImageFilter.GaussianBlur(1.2)), np.float32) / 255
    return np.repeat(g[..., None], 3, -1)


def _microscopy(rng: np.random.Generator, s: int) -> Img:
    im = Image.new("RGB", (s, s), (235, 205, 225))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(25, 45))):
        x, y, r = rng.uniform(0, s), rng.uniform(0, s), rng.uniform(0.03, 0.07) * s
        d.ellipse([x - r, y - r * rng.uniform(0.6, 1), x + r, y + r], fill=(200, 120, 170))
        d.ellipse([x - r * 0.4, y - r * 0.4, x + r * 0.4, y + r * 0.4], fill=(80, 40, 120))
    return _f(im.filter(ImageFilter.GaussianBlur(0.6)))


def _text_lines(d: ImageDraw.ImageDraw, rng: np.random.Generator, box: tuple[int, int, int, int], size: int,
                colour: tuple[int, int, int]) -> None:
    font = ImageFont.load_default(size=size)
    x0, y0, _x1, y1 = box
    y = y0
    while y + size < y1:
        line = " ".join(rng.choice(WORDS, int(rng.integers(3, 9))))
        d.text((x0, y), line.capitalize(), fill=colour, font=font)
        y += int(size * 1.5)


def _document(rng: np.random.Generator, s: int) -> Img:
    w, h = int(s * 0.75), s
    im = Image.new("RGB", (w, h), (250, 250, 246))
    d = ImageDraw.Draw(im)
    d.text((w * 0.08, h * 0.04), "REPORT", fill=(20, 20, 20), font=ImageFont.load_default(size=max(10, s // 14)))
    _text_lines(d, rng, (int(w * 0.08), int(h * 0.15), w, int(h * 0.95)), max(6, s // 28), (30, 30, 30))
    return _f(im)


def _screenshot(rng: np.random.Generator, s: int) -> Img:
    w, h = int(s * 1.6), s
    im = Image.new("RGB", (w, h), (245, 246, 248))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, w, h * 0.09], fill=tuple(int(v) for v in rng.integers(30, 90, 3)))
    d.rectangle([0, h * 0.09, w * 0.22, h], fill=(225, 228, 235))
    for k in range(int(rng.integers(2, 5))):
        bx = w * (0.3 + 0.17 * k)
        d.rounded_rectangle([bx, h * 0.82, bx + w * 0.14, h * 0.9], 4, fill=(60, 110, 220))
    _text_lines(d, rng, (int(w * 0.26), int(h * 0.14), w, int(h * 0.78)), max(6, s // 24), (40, 40, 50))
    _text_lines(d, rng, (int(w * 0.02), int(h * 0.14), int(w * 0.2), h), max(6, s // 30), (80, 80, 90))
    return _f(im)


def _shapes(rng: np.random.Generator, s: int) -> Img:
    w, h = int(s * rng.uniform(1.0, 1.5)), s
    return gradient_shapes(w, h) if rng.random() < 0.2 else _random_shapes(rng, w, h)


def _random_shapes(rng: np.random.Generator, w: int, h: int) -> Img:
    xx = np.mgrid[0:h, 0:w][1].astype(np.float32)
    c0, c1 = rng.random(3), rng.random(3)
    base = c0 * (xx / w)[..., None] + c1 * (1 - xx / w)[..., None]
    im = _u8(base)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 7))):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.08, 0.25) * h
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        [d.ellipse, d.rectangle][int(rng.integers(2))]([x - r, y - r, x + r, y + r], fill=col)
    return _f(im)


SYNTH: dict[str, Callable[[np.random.Generator, int], Img]] = {
    "landscape": _landscape, "xray": _xray, "microscopy": _microscopy, "document": _document,
    "screenshot": _screenshot, "shapes": _shapes}


def _blur(img: Img, sigma: float) -> Img:
    return _f(_u8(img).filter(ImageFilter.GaussianBlur(sigma)))


def _jpeg(img: Img, quality: int) -> Img:
    buf = io.BytesIO()
    _u8(img).save(buf, format="JPEG", quality=quality)
    return _f(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _corner(img: Img, rng: np.random.Generator) -> Img:
    h, w = img.shape[:2]
    ch, cw = h // 4, w // 4
    y0 = 0 if rng.random() < 0.5 else h - ch
    x0 = 0 if rng.random() < 0.5 else w - cw
    return _f(_u8(img[y0:y0 + ch, x0:x0 + cw]).resize((w, h), Image.BILINEAR))


def degrade(img: Img, kind: str, rng: np.random.Generator) -> Img:
    """One frame changed by an unfamiliar or mild kind (sizes relative to the frame)."""
    s = min(img.shape[:2])
    if kind == "heavy_blur":
        return _blur(img, s / 20)
    if kind == "overexposed":
        return np.clip(img * 2.5 + 0.25, 0, 1)
    if kind == "underexposed":
        return np.clip(img * 0.12, 0, 1)
    if kind == "corner_crop":
        return _corner(img, rng)
    if kind == "inverted":
        return 1.0 - img
    if kind == "slight_blur":
        return _blur(img, s / 200)
    if kind == "jpeg_q60":
        return _jpeg(img, 60)
    if kind == "brightness":
        return np.clip(img * (1 + rng.choice([-0.1, 0.1])), 0, 1)
    raise ValueError(f"unknown kind {kind!r}")


def build_set(frames: Sequence[Img], per_kind: int = 6, seed: int = 0, size: int = 128) -> list[TestImage]:
    """`per_kind` images of every unfamiliar and mild kind; degraded kinds cycle through `frames`."""
    if not frames:
        raise ValueError("the unfamiliar-input set needs at least one real frame to degrade")
    rng = np.random.default_rng(seed)
    out: list[TestImage] = []
    for kind in UNFAMILIAR_SYNTH:
        out += [TestImage(f"{kind}_{i}", kind, "unfamiliar", SYNTH[kind](rng, size)) for i in range(per_kind)]
    for group, kinds in (("unfamiliar", UNFAMILIAR_FROM_FRAMES), ("mild", MILD)):
        for k, kind in enumerate(kinds):
            for i in range(per_kind):
                src = np.asarray(frames[(k * per_kind + i) % len(frames)], np.float32)
                out.append(TestImage(f"{kind}_{i}", kind, group, degrade(src, kind, rng)))
    return out
