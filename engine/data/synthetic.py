"""Embedded default data: procedural cataract-surgery microscope frames with exact 5-class labels.

Each frame is a top-down operating-microscope view: skin or a surgical drape around the eye,
speculum wires holding the lids, the whitish globe with vessels (label *cornea*), a textured
iris, a pupil glowing with the orange-red fundus reflex, microscope highlights, 0-3 metal
instruments, then microscope and camera effects (vignetting, colour temperature, defocus,
sensor noise, JPEG). Geometry comes from :mod:`engine.data.synth_scene`, so labels are exact.
Colours are deliberately ambiguous across classes (tan skin vs brown iris, red lid margins vs
the red reflex, grey tools vs dim sclera, blue drapes vs blue irises), so a segmenter has to use
spatial context, not colour alone. Everything is drawn from ``np.random.default_rng(seed)``.
"""
from __future__ import annotations

import io
import math
import logging
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from engine.data import synth_textures as tx
from engine.data.classes import STUDY5
from engine.data.folder import write_folder_dataset
from engine.data.images import save_png_atomic
from engine.data.synth_scene import Scene, instrument_sd, region_sds, sample_scene, scene_labels

log = logging.getLogger(__name__)

# Skin tones include povidone-iodine (betadine) stained skin, orange-brown like many irises.
SKIN_TONES = [(0.88, 0.70, 0.62), (0.80, 0.60, 0.45), (0.62, 0.42, 0.30), (0.85, 0.52, 0.45),
              (0.72, 0.55, 0.50), (0.90, 0.78, 0.60), (0.78, 0.52, 0.22), (0.60, 0.36, 0.16)]
DRAPES = [(0.30, 0.48, 0.68), (0.28, 0.56, 0.50), (0.55, 0.62, 0.70), (0.42, 0.55, 0.72)]
IRIS_TONES = [(0.45, 0.28, 0.16), (0.30, 0.19, 0.12), (0.52, 0.44, 0.25), (0.36, 0.48, 0.32),
              (0.36, 0.48, 0.62), (0.50, 0.50, 0.52), (0.62, 0.40, 0.26)]
HANDLE_TONES = [(0.75, 0.76, 0.78), (0.62, 0.64, 0.66), (0.25, 0.40, 0.75), (0.20, 0.55, 0.40),
                (0.80, 0.65, 0.30), (0.88, 0.88, 0.85)]


def _jitter(rng: np.random.Generator, rgb: Sequence[float], amount: float) -> np.ndarray:
    """A palette colour with a random per-channel perturbation."""
    gain = rng.uniform(1 - amount, 1 + amount, 3).astype(np.float32)
    return np.clip(np.asarray(rgb, np.float32) * gain, 0, 1)


def _pick(rng: np.random.Generator, palette: list, amount: float = 0.12) -> np.ndarray:
    return _jitter(rng, palette[int(rng.integers(len(palette)))], amount)


def _surround(rng: np.random.Generator, n: int, x, y, scene: Scene, open_sd: np.ndarray) -> np.ndarray:
    """Skin with pores, wrinkles and shading; sometimes a fabric or plastic drape further out."""
    tone = _pick(rng, SKIN_TONES, 0.1)
    low = tx.fbm(rng, n, base=2, octaves=3)
    pores = tx.value_noise(rng, n, n // 3)
    wrinkles = np.exp(-(tx.value_noise(rng, n, 10) / 0.12) ** 2)
    shade = 1.0 + 0.12 * low + 0.035 * pores - 0.12 * wrinkles
    img = tone[None, None, :] * shade[..., None]
    # Lid margin: moist, reddish, darker band just outside the opening, with a lash line.
    margin_w = rng.uniform(0.03, 0.08)
    margin = (1.0 - tx.smoothstep(0.0, margin_w, open_sd)) * (0.6 + 0.25 * tx.value_noise(rng, n, 8))
    margin = np.clip(margin, 0, 1)[..., None]
    rim = np.array([0.62, 0.28, 0.22], np.float32) * rng.uniform(0.7, 1.2)
    img = img * (1 - margin) + rim * margin
    lash = np.exp(-((open_sd - margin_w * 0.9) / 0.012) ** 2) * rng.uniform(0.2, 0.6)
    img *= 1 - lash[..., None]
    if rng.random() < 0.6:  # drape over the face, cut out around the eye
        a, b, ang = scene.opening
        k = rng.uniform(1.15, 1.6)
        hole = tx.ellipse_sd(x, y, *scene.center, a * k, b * k, ang, tx.periodic_curve(rng, 5, 0.1))
        cover = tx.smoothstep(0.0, 0.02, hole)
        if rng.random() < 0.65:  # woven fabric
            col = _pick(rng, DRAPES, 0.15)
            th = rng.uniform(0, np.pi)
            u, v = x * math.cos(th) + y * math.sin(th), -x * math.sin(th) + y * math.cos(th)
            f = rng.uniform(60, 120)
            weave = 0.05 * np.sin(f * u) * np.sin(f * v)
            folds = 0.22 * tx.fbm(rng, n, base=3, octaves=2)
            drape = col[None, None, :] * (1 + weave + folds)[..., None]
        else:  # clear adhesive film: skin seen through, glossy streaks
            streak = np.abs(tx.value_noise(rng, n, 6))
            drape = img * 0.9 + 0.5 * np.exp(-(streak / 0.08) ** 2)[..., None]
        img = img * (1 - cover[..., None]) + drape * cover[..., None]
    return img


def _globe(rng: np.random.Generator, n: int, open_sd: np.ndarray) -> np.ndarray:
    """Sclera + clear cornea: off-white, vessels, darker under the lids, wet sheen."""
    base = _jitter(rng, (0.88, 0.80, 0.76), 0.05) * rng.uniform(0.75, 1.05)
    inner = tx.smoothstep(0.0, rng.uniform(0.12, 0.3), -open_sd)
    shade = 0.55 + 0.45 * inner + 0.06 * tx.fbm(rng, n, base=3, octaves=2)
    img = base[None, None, :] * shade[..., None]
    vessel = np.zeros((n, n), np.float32)
    for cells, width in ((7, 0.06), (14, 0.05)):
        vessel += np.exp(-(tx.value_noise(rng, n, cells) / width) ** 2)
    vessel *= (1 - 0.7 * inner) * rng.uniform(0.3, 0.8)
    red = np.array([0.70, 0.18, 0.16], np.float32)
    w = np.clip(vessel, 0, 1)[..., None]
    return img * (1 - w) + red * w


def _iris(rng: np.random.Generator, n: int, x, y, scene: Scene) -> np.ndarray:
    """Radial fibres, collarette, crypts and a dark limbal ring around the pupil centre."""
    px, py = scene.pupil_center
    iris_r = 0.5 * (scene.iris[0] + scene.iris[1])
    tone = _pick(rng, IRIS_TONES, 0.15)
    coll_base, coll_amp = rng.uniform(0.2, 0.4), tx.periodic_1d(rng, 12)
    ruff, crypt_depth = rng.uniform(0.15, 0.35), rng.uniform(0.25, 0.45)
    out = np.zeros((n, n, 3), np.float32)
    dx, dy = x - px, y - py
    r = np.sqrt(dx * dx + dy * dy)
    m = r < max(scene.iris) * 1.2 + 0.02  # only shade pixels that can show iris
    dx, dy, r = dx[m], dy[m], r[m]
    theta01 = (np.arctan2(dy, dx) / (2 * np.pi)) % 1.0
    rad01 = np.clip((r - scene.pupil_r) / max(iris_r - scene.pupil_r, 1e-3), 0, 1)
    fibres = tx.polar_texture(rng, theta01, rad01, 180, 3) + 0.6 * tx.polar_texture(rng, theta01, rad01, 50, 6)
    shade = 0.8 + 0.13 * fibres
    coll_r = coll_base + 0.05 * tx.sample_loop(coll_amp, theta01)
    shade += ruff * np.exp(-((rad01 - coll_r) / 0.06) ** 2)
    crypts = tx.polar_texture(rng, theta01, rad01, 40, 8)
    shade -= crypt_depth * tx.smoothstep(1.2, 1.8, crypts) * (rad01 > coll_r)
    shade *= 1 - 0.45 * tx.smoothstep(0.7, 1.0, rad01)
    shade *= 0.75 + 0.25 * tx.smoothstep(0.0, 0.08, rad01)  # pigment ruff at the pupil edge
    out[m] = tone[None, :] * shade[:, None]
    return out


def _pupil(rng: np.random.Generator, n: int, x, y, scene: Scene) -> np.ndarray:
    """The fundus red reflex: uneven orange-red glow, dim edge, sometimes lens opacities."""
    col = np.array([rng.uniform(0.7, 1.0), rng.uniform(0.18, 0.5), rng.uniform(0.03, 0.15)], np.float32)
    cx = scene.pupil_center[0] + rng.normal(0, 0.3) * scene.pupil_r
    cy = scene.pupil_center[1] + rng.normal(0, 0.3) * scene.pupil_r
    d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / scene.pupil_r
    glow = 1.0 - 0.35 * np.clip(d, 0, 1.5) + 0.12 * tx.fbm(rng, n, base=4, octaves=3)
    glow *= rng.uniform(0.5, 1.05)
    img = col[None, None, :] * glow[..., None]
    if rng.random() < 0.45:  # cataract haze
        haze = tx.smoothstep(0.2, 1.2, tx.fbm(rng, n, base=5, octaves=3)) * rng.uniform(0.2, 0.6)
        img = img * (1 - haze[..., None]) + np.array([0.8, 0.75, 0.65], np.float32) * haze[..., None]
    return img


def _highlights(rng: np.random.Generator, x, y, scene: Scene) -> np.ndarray:
    """Small specular reflections of the microscope lamps on the cornea (label unchanged)."""
    out = np.zeros(x.shape, np.float32)
    for _ in range(int(rng.integers(1, 5))):
        hx = scene.center[0] + rng.normal(0, 0.4) * scene.iris[0]
        hy = scene.center[1] + rng.normal(0, 0.4) * scene.iris[0]
        s = rng.uniform(0.008, 0.03)
        out += np.exp(-((x - hx) ** 2 + (y - hy) ** 2) / (2 * s * s)) * rng.uniform(0.6, 1.2)
    return np.clip(out, 0, 1)


def _metal(rng: np.random.Generator, img, cov, across, along, tint) -> np.ndarray:
    """Composite a polished metal part with cylinder shading and streaky reflections."""
    loop = tx.periodic_1d(rng, 24)
    freq, light, gloss = rng.uniform(0.3, 1.0), rng.uniform(-0.5, 0.5), rng.uniform(0.3, 0.8)
    m = cov > 0
    if not m.any():
        return img
    streaks = tx.sample_loop(loop, along[m] * freq)
    shade = tx.metal_shade(across[m], streaks, light, gloss)
    c = cov[m][:, None]
    img[m] = img[m] * (1 - c) + tint[None, :] * shade[:, None] * c
    return img


def _shifted(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Array translated by whole pixels (for cheap cast shadows), zeros shifted in."""
    out = np.zeros_like(a)
    h, w = a.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out


def _tools(rng: np.random.Generator, img, x, y, scene: Scene, px: float) -> np.ndarray:
    """Speculum wires and instruments with soft shadows and specular shading."""
    n = x.shape[0]
    sh = [int(v) for v in rng.integers(-n // 40 - 1, n // 40 + 2, 2)]
    for pts, hw in scene.wires:
        sd, across = tx.polyline_sd(x, y, pts, hw)
        cov = tx.coverage(sd, px)
        shadow = tx.blur(_shifted(tx.coverage(sd - hw * 0.5, px), *sh), 2.0)
        img = img * (1 - 0.35 * shadow[..., None])
        img = _metal(rng, img, cov, across, x + y, _pick(rng, HANDLE_TONES[:2], 0.05))
    for ins in scene.instruments:
        sd, across, t = instrument_sd(ins, x, y)
        cov = tx.coverage(sd, px)
        shadow = tx.blur(_shifted(tx.coverage(sd - 0.01, px), sh[0] * 2, sh[1] * 2), 3.0)
        img = img * (1 - 0.4 * shadow[..., None])
        metal_tint = _pick(rng, HANDLE_TONES[:2], 0.06)
        handle = tx.smoothstep(ins.handle_start, ins.handle_start + 0.06, t)
        img = _metal(rng, img, cov * (1 - handle), across, t, metal_tint)
        grip = 0.85 + 0.15 * np.sin(t * rng.uniform(60, 160))
        img = _metal(rng, img, cov * handle, across * grip, t, _pick(rng, HANDLE_TONES, 0.1))
    return img


def _camera(rng: np.random.Generator, img: np.ndarray, x, y, scene: Scene, f: int) -> np.ndarray:
    """Microscope lighting and camera: vignette, colour temperature, defocus, downsample, noise."""
    vx, vy = scene.center[0] * rng.uniform(0.3, 1.0), scene.center[1] * rng.uniform(0.3, 1.0)
    vig = 1.0 - rng.uniform(0.25, 0.6) * ((x - vx) ** 2 + (y - vy) ** 2) / 2.0
    # warm halogen/LED microscope light: never greener than neutral
    gains = np.array([rng.uniform(0.97, 1.15), rng.uniform(0.93, 1.0), rng.uniform(0.72, 1.0)], np.float32)
    img = img * vig[..., None] * gains * rng.uniform(0.65, 1.25)
    img = tx.blur(img, rng.uniform(0.3, 2.0) * f / 2)
    img = tx.box_down(img, f)
    img = img + rng.normal(0, rng.uniform(0.004, 0.025), img.shape).astype(np.float32)
    return np.clip(img, 0, 1)


def _jpeg(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """Encode/decode once as JPEG with quality 50-95 (compression artefacts)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(rng.integers(50, 96)))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def generate_frame(seed: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic synthetic frame: (uint8 size x size x 3 RGB, uint8 size x size STUDY5 labels)."""
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng)
    return render_scene(rng, scene, size), scene_labels(scene, size)


def render_scene(rng: np.random.Generator, scene: Scene, size: int, jpeg: bool = True) -> np.ndarray:
    """uint8 size x size x 3 picture of `scene`, textures and camera drawn from `rng` (labels: scene_labels).

    The number of draws does not depend on where things are, so the same seed gives the same textures
    for a moved scene (how `engine.video.synth_video` animates a clip).
    """
    f = 2 if size <= 512 else 1  # render at 2x and average down for anti-aliasing
    n = size * f
    px = 2.0 / n
    x, y = tx.grid(n)
    sd = region_sds(scene, x, y)
    img = _surround(rng, n, x, y, scene, sd["opening"])
    cov_open = tx.coverage(sd["opening"], px)[..., None]
    img = img * (1 - cov_open) + _globe(rng, n, sd["opening"]) * cov_open
    limbus = tx.coverage(sd["iris"], px * rng.uniform(2, 5))[..., None] * cov_open
    img = img * (1 - limbus) + _iris(rng, n, x, y, scene) * limbus
    cov_p = tx.coverage(sd["pupil"], px * 1.5)[..., None] * cov_open
    img = img * (1 - cov_p) + _pupil(rng, n, x, y, scene) * cov_p
    img = img + _highlights(rng, x, y, scene)[..., None] * cov_open
    img = _tools(rng, img, x, y, scene, px)
    img = _camera(rng, img, x, y, scene, f)
    rgb = (img * 255 + 0.5).astype(np.uint8)
    return _jpeg(rng, rgb) if jpeg else rgb


def frame_seeds(seed: int, count: int) -> list[int]:
    """Independent per-frame seeds derived from (seed, index)."""
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(count)]


def write_synthetic_dataset(
    out: str | Path, size: int = 128, seed: int = 0, n_unlabelled: int = 1000, n_train: int = 20,
    n_test: int = 100,
) -> Path:
    """Write the synthetic folder data set (images, masks for train+test, classes.json, split.json)."""
    total = n_unlabelled + n_train + n_test
    seeds = frame_seeds(seed, total)
    stems = [f"synth_{i:05d}" for i in range(total)]
    train, test = stems[:n_train], stems[n_train:n_train + n_test]
    labelled = set(train) | set(test)

    def items() -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
        for i, (stem, s) in enumerate(zip(stems, seeds)):
            rgb, lab = generate_frame(s, size)
            if i and i % 200 == 0:
                log.info("synthetic: %d / %d frames", i, total)
            yield stem, rgb, (lab if stem in labelled else None)

    split = {"train": train, "test": test, "unlabeled": stems[n_train + n_test:]}
    return write_folder_dataset(out, STUDY5, items(), split)


def save_grid(images: Sequence[np.ndarray], path: str | Path, ncol: int = 8, pad: int = 2) -> Path:
    """Tile uint8 HxWx3 images (same size) into one PNG, to eyeball frames and masks."""
    if not images:
        raise ValueError("save_grid: no images")
    h, w = images[0].shape[:2]
    nrow = (len(images) + ncol - 1) // ncol
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, ncol)
        im3 = np.repeat(im[..., None], 3, 2) if im.ndim == 2 else im[..., :3]
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = im3
    return save_png_atomic(path, canvas)
