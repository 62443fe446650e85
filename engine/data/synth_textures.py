"""Procedural noise, shapes and material shading used by the synthetic cataract-frame generator.

Everything takes an explicit ``np.random.Generator`` (never the global RNG) and works on
coordinate grids in normalised frame units (the frame spans [-1, 1] on both axes), so the same
geometry can be evaluated at the internal render resolution and at the label resolution.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage


def grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (X, Y) of an n x n frame spanning [-1, 1]."""
    c = (np.arange(n, dtype=np.float32) + 0.5) / n * 2.0 - 1.0
    return np.meshgrid(c, c)


def upsample(small: np.ndarray, n: int) -> np.ndarray:
    """Smooth bicubic upsampling of a small float grid to n x n (Pillow, fast)."""
    return np.asarray(
        Image.fromarray(small.astype(np.float32)).resize((n, n), Image.Resampling.BICUBIC), dtype=np.float32
    )


def value_noise(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """Band-limited noise with ~``cells`` features across the frame, roughly N(0, 1)."""
    return upsample(rng.standard_normal((cells + 1, cells + 1)), n)


def fbm(rng: np.random.Generator, n: int, base: int = 3, octaves: int = 4, gain: float = 0.5) -> np.ndarray:
    """Fractal (multi-octave) noise, normalised to zero mean and unit std."""
    out = np.zeros((n, n), np.float32)
    amp, cells = 1.0, base
    for _ in range(octaves):
        out += amp * value_noise(rng, n, min(cells, n))
        amp *= gain
        cells *= 2
    return (out - out.mean()) / (out.std() + 1e-6)


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """Hermite ramp 0 -> 1 between edge0 and edge1."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def coverage(sd: np.ndarray, px: float) -> np.ndarray:
    """Anti-aliased inside-coverage from a signed distance (negative inside), ``px`` = pixel size."""
    return np.clip(0.5 - sd / px, 0.0, 1.0)


def periodic_curve(rng: np.random.Generator, harmonics: int, amp: float) -> tuple[np.ndarray, np.ndarray]:
    """Random Fourier coefficients for a smooth closed-curve perturbation of relative size ``amp``."""
    k = np.arange(1, harmonics + 1)
    a = rng.normal(0.0, amp, harmonics) / k
    p = rng.uniform(0, 2 * np.pi, harmonics)
    return a, p


def eval_curve(theta: np.ndarray, coeffs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """1 + sum a_k cos(k theta + p_k): a radius multiplier for a wobbly closed curve."""
    return eval_curve_xy(np.cos(theta), np.sin(theta), coeffs)


def eval_curve_xy(c: np.ndarray, s: np.ndarray, coeffs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``eval_curve`` from cos/sin of the angle, using the complex recursion (no trig per term)."""
    a, p = coeffs
    out = np.ones_like(c)
    ck, sk = c, s
    for k in range(len(a)):
        if k:
            ck, sk = ck * c - sk * s, sk * c + ck * s
        ak, pk = float(a[k]), float(p[k])  # python floats keep float32 arrays float32
        out += ak * np.cos(pk) * ck - ak * np.sin(pk) * sk
    return out


def ellipse_sd(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float,
               angle: float = 0.0, wobble: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Approximate signed distance to a (rotated, optionally wobbly) ellipse; negative inside."""
    ca, sa = math.cos(angle), math.sin(angle)
    dx, dy = x - cx, y - cy
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    q = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    if wobble is not None:
        rho = np.sqrt(u * u + v * v) + 1e-9
        q = q / eval_curve_xy(u / rho, v / rho, wobble)
    return (q - 1.0) * min(rx, ry)


def periodic_1d(rng: np.random.Generator, k: int) -> np.ndarray:
    """k random samples closed into a loop (last = first), for angular textures."""
    v = rng.standard_normal(k + 1).astype(np.float32)
    v[-1] = v[0]
    return v


def sample_loop(vals: np.ndarray, t01: np.ndarray) -> np.ndarray:
    """Linear interpolation of a closed loop of samples at positions t in [0, 1)."""
    k = len(vals) - 1
    return np.interp((t01 % 1.0) * k, np.arange(k + 1), vals).astype(np.float32)


def polar_texture(rng: np.random.Generator, theta01: np.ndarray, rad01: np.ndarray,
                  n_theta: int, n_rad: int) -> np.ndarray:
    """Noise on a (angle, radius) grid that wraps in angle: fibre-like when n_theta >> n_rad."""
    g = rng.standard_normal((n_rad + 1, n_theta + 1)).astype(np.float32)
    g[:, -1] = g[:, 0]
    rows = np.clip(rad01, 0.0, 1.0) * n_rad
    cols = (theta01 % 1.0) * n_theta
    return ndimage.map_coordinates(g, [rows, cols], order=1, mode="nearest")


def polyline_sd(x: np.ndarray, y: np.ndarray, pts: np.ndarray, half_width: float) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance to a thick polyline (wire) and the signed across-wire offset in [-1, 1].

    ``x``/``y`` must be a ``grid``; each segment is only evaluated inside its bounding box
    (plus a margin), elsewhere the distance stays +inf, which is enough for coverage/shadows.
    """
    best = np.full(x.shape, np.inf, np.float32)
    across = np.zeros(x.shape, np.float32)
    xs, ys = x[0, :], y[:, 0]
    margin = 2.0 * half_width + 0.03
    for a, b in zip(pts[:-1], pts[1:]):
        c0, c1 = np.searchsorted(xs, [min(a[0], b[0]) - margin, max(a[0], b[0]) + margin])
        r0, r1 = np.searchsorted(ys, [min(a[1], b[1]) - margin, max(a[1], b[1]) + margin])
        if c0 >= c1 or r0 >= r1:
            continue
        sx, sy = x[r0:r1, c0:c1], y[r0:r1, c0:c1]
        ab = b - a
        length2 = float(ab @ ab) + 1e-12
        t = np.clip(((sx - a[0]) * ab[0] + (sy - a[1]) * ab[1]) / length2, 0.0, 1.0)
        px, py = sx - (a[0] + t * ab[0]), sy - (a[1] + t * ab[1])
        d = np.sqrt(px * px + py * py)
        side = (-px * ab[1] + py * ab[0]) / np.sqrt(length2)
        sub_best, sub_across = best[r0:r1, c0:c1], across[r0:r1, c0:c1]
        closer = d < sub_best
        sub_best[closer] = d[closer]
        sub_across[closer] = side[closer]
    return best - half_width, np.clip(across / half_width, -1.0, 1.0)


def metal_shade(across: np.ndarray, along_noise: np.ndarray, light: float, gloss: float) -> np.ndarray:
    """Brightness of a polished cylinder seen from above: dark rims, sharp highlight stripe."""
    n = np.clip(across, -1.0, 1.0)
    lambert = np.sqrt(np.clip(1.0 - n * n, 0.0, 1.0))
    stripe = np.exp(-((n - light) / 0.18) ** 2) * gloss
    return 0.25 + 0.55 * lambert * (1.0 + 0.25 * along_noise) + stripe


def box_down(img: np.ndarray, f: int) -> np.ndarray:
    """Average-pool an HxW(xC) array by an integer factor (anti-aliasing downsample)."""
    if f == 1:
        return img
    h, w = img.shape[:2]
    return img.reshape(h // f, f, w // f, f, *img.shape[2:]).mean(axis=(1, 3))


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the spatial axes only."""
    if sigma <= 0:
        return img
    s = (sigma, sigma) + (0,) * (img.ndim - 2)
    return ndimage.gaussian_filter(img, s, mode="reflect")
