"""Random scene geometry of a synthetic cataract-surgery frame, and its exact label map.

A scene is a handful of analytic shapes in normalised frame units ([-1, 1] across the frame):
the eyelid opening (held by a speculum), the iris and pupil ellipses, speculum wires and 0-3
instruments. Labels are a pure function of this geometry, evaluated at the output pixel centres,
so they are exact whatever resolution the image is rendered at.

Label semantics follow CaDIS merged to the study's five classes: *cornea* is the visible globe
(sclera + clear cornea) not covered by iris, pupil or instruments; *skin* is everything outside
the lid opening (skin, lid margins, drapes, tape); retractor wires count as *instrument*.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.data.synth_textures import ellipse_sd, eval_curve, grid, periodic_curve, polyline_sd

PUPIL, IRIS, CORNEA, SKIN, INSTRUMENT = 0, 1, 2, 3, 4


@dataclass
class Instrument:
    """A tapered tool entering from the frame edge: thin tip, shaft, wider handle."""

    tip: tuple[float, float]
    direction: np.ndarray  # unit vector from the tip towards the handle (out of the frame)
    tip_w: float
    shaft_w: float
    handle_w: float
    taper_len: float
    handle_start: float
    prong_len: float = 0.0  # > 0: forceps with two jaws near the tip
    prong_gap: float = 0.0


@dataclass
class Scene:
    """All geometry of one frame."""

    center: tuple[float, float]
    iris: tuple[float, float, float]  # rx, ry, angle
    iris_wobble: tuple[np.ndarray, np.ndarray]
    pupil_center: tuple[float, float]
    pupil_r: float
    pupil_wobble: tuple[np.ndarray, np.ndarray]
    opening: tuple[float, float, float]  # a, b, angle
    opening_wobble: tuple[np.ndarray, np.ndarray]
    wires: list[tuple[np.ndarray, float]] = field(default_factory=list)
    instruments: list[Instrument] = field(default_factory=list)


def opening_point(scene: Scene, phi: float, scale: float = 1.0) -> np.ndarray:
    """Point on the lid-opening boundary at local angle ``phi`` (times ``scale``)."""
    a, b, ang = scene.opening
    wob = float(eval_curve(np.array([phi]), scene.opening_wobble)[0])
    r = wob / np.sqrt((np.cos(phi) / a) ** 2 + (np.sin(phi) / b) ** 2) * scale
    u, v = r * np.cos(phi), r * np.sin(phi)
    ca, sa = np.cos(ang), np.sin(ang)
    return np.array([scene.center[0] + ca * u - sa * v, scene.center[1] + sa * u + ca * v])


def _speculum_wire(rng: np.random.Generator, scene: Scene, side: float) -> tuple[np.ndarray, float]:
    """One speculum blade: an arc hooked under a lid plus two arms running off the frame."""
    mid = side + rng.normal(0, 0.15)
    span = rng.uniform(0.35, 0.7)
    inset = rng.uniform(0.9, 1.0)
    arc = [opening_point(scene, mid + t, inset) for t in np.linspace(-span, span, 9)]
    out_dir = arc[len(arc) // 2] - np.array(scene.center)
    out_dir /= np.linalg.norm(out_dir) + 1e-9
    spread = rng.uniform(0.3, 0.8)
    tangent = arc[-1] - arc[0]
    tangent /= np.linalg.norm(tangent) + 1e-9
    end_a = arc[0] + 3.0 * (out_dir - spread * tangent)
    end_b = arc[-1] + 3.0 * (out_dir + spread * tangent)
    pts = np.array([end_a] + arc + [end_b], dtype=np.float32)
    return pts, float(rng.uniform(0.008, 0.016))


def _instrument(rng: np.random.Generator, scene: Scene, iris_r: float) -> Instrument:
    """A random tool whose tip lies near the pupil and whose handle leaves the frame."""
    cx, cy = scene.center
    tip_r = iris_r * rng.uniform(0.0, 1.1)
    tip_a = rng.uniform(0, 2 * np.pi)
    tip = (float(cx + tip_r * np.cos(tip_a)), float(cy + tip_r * np.sin(tip_a)))
    out = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(out), np.sin(out)], dtype=np.float32)
    kind = rng.choice(["cannula", "forceps", "handpiece", "knife"], p=[0.35, 0.25, 0.25, 0.15])
    scale = rng.uniform(0.8, 1.3)
    if kind == "cannula":
        return Instrument(tip, direction, 0.008 * scale, 0.016 * scale, rng.uniform(0.05, 0.09) * scale,
                          rng.uniform(0.3, 0.6), rng.uniform(0.6, 1.1))
    if kind == "forceps":
        return Instrument(tip, direction, 0.01 * scale, 0.03 * scale, rng.uniform(0.06, 0.1) * scale,
                          rng.uniform(0.2, 0.4), rng.uniform(0.6, 1.0),
                          prong_len=rng.uniform(0.12, 0.22), prong_gap=rng.uniform(0.01, 0.04))
    if kind == "handpiece":
        return Instrument(tip, direction, 0.03 * scale, 0.06 * scale, rng.uniform(0.09, 0.14) * scale,
                          rng.uniform(0.08, 0.2), rng.uniform(0.4, 0.8))
    return Instrument(tip, direction, 0.004 * scale, 0.04 * scale, rng.uniform(0.05, 0.08) * scale,
                      rng.uniform(0.1, 0.2), rng.uniform(0.5, 0.9))


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw random geometry: position, zoom, pupil dilation, lid opening, speculum, tools."""
    center = (float(rng.uniform(-0.18, 0.18)), float(rng.uniform(-0.15, 0.15)))
    iris_r = float(rng.uniform(0.36, 0.6))
    iris = (iris_r, iris_r * float(rng.uniform(0.88, 1.0)), float(rng.uniform(0, np.pi)))
    pupil_r = iris_r * float(rng.uniform(0.42, 0.72))
    off = (iris_r - pupil_r) * 0.2
    pupil_center = (center[0] + float(rng.uniform(-off, off)), center[1] + float(rng.uniform(-off, off)))
    opening = (iris_r * float(rng.uniform(1.6, 2.4)), iris_r * float(rng.uniform(1.2, 1.6)),
               float(rng.normal(0, 0.25)))
    scene = Scene(center, iris, periodic_curve(rng, 4, 0.015), pupil_center, pupil_r,
                  periodic_curve(rng, 5, 0.03), opening, periodic_curve(rng, 4, 0.08))
    if rng.random() < 0.85:
        up = -np.pi / 2
        scene.wires = [_speculum_wire(rng, scene, up), _speculum_wire(rng, scene, up + np.pi)]
    n_tools = int(rng.choice([0, 1, 2, 3], p=[0.15, 0.4, 0.3, 0.15]))
    scene.instruments = [_instrument(rng, scene, iris_r) for _ in range(n_tools)]
    return scene


def half_width(ins: Instrument, t: np.ndarray) -> np.ndarray:
    """Half width of the tool at distance t from the tip (tip -> shaft -> handle)."""
    ramp = np.clip(t / ins.taper_len, 0.0, 1.0)
    hw = 0.5 * (ins.tip_w + (ins.shaft_w - ins.tip_w) * ramp)
    grip = np.clip((t - ins.handle_start) / 0.06, 0.0, 1.0)
    return hw + 0.5 * (ins.handle_w - ins.shaft_w) * grip


def instrument_sd(ins: Instrument, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed distance to the tool, across-offset in [-1, 1] and along-axis distance t."""
    dx, dy = x - ins.tip[0], y - ins.tip[1]
    t = dx * ins.direction[0] + dy * ins.direction[1]
    s = -dx * ins.direction[1] + dy * ins.direction[0]
    hw = half_width(ins, np.maximum(t, 0.0))
    sd = np.where(t >= 0, np.abs(s) - hw, np.sqrt(t * t + s * s) - 0.5 * ins.tip_w)
    across = s / np.maximum(hw, 1e-4)
    if ins.prong_len > 0:
        near = t < ins.prong_len
        c = ins.prong_gap * np.clip(1.0 - t / ins.prong_len, 0.0, 1.0) + 0.25 * ins.shaft_w
        pw = 0.35 * ins.shaft_w
        jaws = np.minimum(np.abs(s - c), np.abs(s + c)) - pw
        jaws = np.where(t >= 0, jaws, np.sqrt(t * t + (np.abs(s) - c) ** 2) - pw)
        sd = np.where(near, jaws, sd)
        across = np.where(near, np.clip((np.abs(s) - c) / pw, -1, 1) * np.sign(s), across)
    return sd.astype(np.float32), np.clip(across, -1, 1).astype(np.float32), t.astype(np.float32)


def region_sds(scene: Scene, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Signed distances (negative inside) of opening, iris and pupil."""
    a, b, ang = scene.opening
    rx, ry, iang = scene.iris
    return {
        "opening": ellipse_sd(x, y, *scene.center, a, b, ang, scene.opening_wobble),
        "iris": ellipse_sd(x, y, *scene.center, rx, ry, iang, scene.iris_wobble),
        "pupil": ellipse_sd(x, y, *scene.pupil_center, scene.pupil_r, scene.pupil_r, 0.0, scene.pupil_wobble),
    }


def scene_labels(scene: Scene, n: int) -> np.ndarray:
    """Exact uint8 n x n label map of a scene (instruments occlude everything)."""
    x, y = grid(n)
    sd = region_sds(scene, x, y)
    lab = np.full((n, n), SKIN, np.uint8)
    inside = sd["opening"] < 0
    lab[inside] = CORNEA
    lab[inside & (sd["iris"] < 0)] = IRIS
    lab[inside & (sd["pupil"] < 0)] = PUPIL
    for pts, hw in scene.wires:
        lab[polyline_sd(x, y, pts, hw)[0] < 0] = INSTRUMENT
    for ins in scene.instruments:
        lab[instrument_sd(ins, x, y)[0] < 0] = INSTRUMENT
    return lab
