"""Synthetic surgery clips with exact per-frame labels (`python -m engine data synth-video`).

One random scene of the synthetic generator is animated: the eye drifts on a smooth path, the pupil
dilates and constricts, instruments slide in along their own axis, work, and slide out again at their
own times, and the microscope light dims and warms. Textures are drawn from the same seed every frame
(they stay put on the moving geometry's pixels), so only what the scene does changes. Labels come from
the same geometry at the output pixel centres, so they are exact. Frames are square renders cropped to
the clip's aspect ratio (the longer side spans the scene's [-1, 1]).
"""
from __future__ import annotations

import copy
import io
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_bytes_atomic, write_json_atomic
from ..data.classes import STUDY5
from ..data.synth_scene import Scene, _instrument, sample_scene, scene_labels
from ..data.synthetic import render_scene
from .writer import Mp4Writer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipConfig:
    """Size, length and randomness of a synthetic clip."""

    width: int = 640
    height: int = 480
    fps: float = 10.0
    seconds: float = 6.0
    seed: int = 0
    instruments: int = 2
    speculum: bool = False  # retractor wires count as instrument (study5): without them presence tracks the tools

    @property
    def frames(self) -> int:
        return max(1, int(round(self.fps * self.seconds)))


def _smooth(t: float, a: float, b: float, ramp: float) -> float:
    """0 before a, 1 between a+ramp and b-ramp, 0 after b, smoothstep ramps (how far a tool is in)."""
    def step(u: float) -> float:
        u = min(max(u, 0.0), 1.0)
        return u * u * (3 - 2 * u)
    return step((t - a) / ramp) * (1.0 - step((t - (b - ramp)) / ramp))


class SceneAnimator:
    """Scene geometry at time t (seconds) of a clip, from one seed."""

    def __init__(self, cfg: ClipConfig):
        rng = np.random.default_rng(cfg.seed)
        base = sample_scene(rng)
        iris_r = float(rng.uniform(0.34, 0.42))  # the clip frames the eye a little tighter than the stills
        k = iris_r / base.iris[0]
        base.iris = (iris_r, base.iris[1] * k, base.iris[2])
        base.pupil_r *= k
        base.opening = (base.opening[0] * k, base.opening[1] * k, base.opening[2])
        base.instruments = [_instrument(rng, base, iris_r) for _ in range(cfg.instruments)]
        if not cfg.speculum:
            base.wires = []
        self.base, self.cfg = base, cfg
        self.texture_seed = int(rng.integers(2**31))
        T = cfg.seconds
        self.drift = (rng.uniform(0.04, 0.08), rng.uniform(0.03, 0.06), rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.2))
        self.dilate = (rng.uniform(0.08, 0.15), rng.uniform(0, 2 * np.pi))
        # each tool: in for a stretch of the clip; the first is in at the start, the last leaves before the end
        spans = []
        for i in range(cfg.instruments):
            a = T * (i / max(cfg.instruments, 1)) * 0.6 - (0.5 if i == 0 else 0.0)
            spans.append((a, a + T * rng.uniform(0.45, 0.6)))
        self.spans = spans
        self.light = (rng.uniform(0.15, 0.25), rng.uniform(0, 2 * np.pi))

    def scene(self, t: float) -> Scene:
        s = copy.deepcopy(self.base)
        T = self.cfg.seconds
        ax, ay, ph, speed = self.drift
        dx = ax * math.sin(2 * math.pi * speed * t / T + ph)
        dy = ay * math.sin(2 * math.pi * speed * t / T * 1.3 + ph * 0.7)
        s.center = (s.center[0] + dx, s.center[1] + dy)
        s.pupil_center = (s.pupil_center[0] + dx, s.pupil_center[1] + dy)
        amp, ph2 = self.dilate
        s.pupil_r = min(self.base.pupil_r * (1 + amp * math.sin(2 * math.pi * t / T + ph2)), s.iris[0] * 0.85)
        s.wires = [(pts + np.array([dx, dy], np.float32), hw) for pts, hw in s.wires]
        for ins, (a, b) in zip(s.instruments, self.spans):
            inside = _smooth(t, a, b, ramp=0.6)
            pull = (1.0 - inside) * 3.0  # fully out = the tip 3 units back along its handle: off the frame
            ins.tip = (ins.tip[0] + dx + pull * float(ins.direction[0]), ins.tip[1] + dy + pull * float(ins.direction[1]))
        return s

    def gain(self, t: float) -> np.ndarray:
        """Light over time: brightness ±15-25 %, warmer when dimmer."""
        amp, ph = self.light
        g = 1.0 + amp * math.sin(2 * math.pi * t / self.cfg.seconds * 0.8 + ph)
        return np.array([g, g * (0.97 + 0.03 * g), g * (0.9 + 0.1 * g)], np.float32)


def clip_frames(cfg: ClipConfig) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(uint8 H×W×3 RGB, uint8 H×W labels) for every frame of the clip."""
    anim = SceneAnimator(cfg)
    side = max(cfg.width, cfg.height)
    top, left = (side - cfg.height) // 2, (side - cfg.width) // 2
    noise = np.random.default_rng(cfg.seed + 1)
    for i in range(cfg.frames):
        t = i / cfg.fps
        scene = anim.scene(t)
        rgb = render_scene(np.random.default_rng(anim.texture_seed), scene, side, jpeg=False).astype(np.float32)
        rgb = rgb * anim.gain(t) + noise.normal(0, 2.0, rgb.shape).astype(np.float32)  # sensor noise per frame
        rgb = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
        lab = scene_labels(scene, side)
        yield rgb[top:top + cfg.height, left:left + cfg.width], lab[top:top + cfg.height, left:left + cfg.width]


def write_clip(out_dir: str | Path, cfg: ClipConfig, name: str = "clip", crf: int = 20) -> dict[str, object]:
    """OUT/<name>.mp4 (H.264), OUT/<name>_labels.npz (`masks` (N,H,W) uint8 STUDY5 ids), OUT/classes.json, meta."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = Mp4Writer(out / f"{name}.mp4", cfg.width, cfg.height, cfg.fps, crf=crf, preset="medium")
    labels = []
    try:
        for i, (rgb, lab) in enumerate(clip_frames(cfg)):
            writer.write(rgb)
            labels.append(lab[: writer.h, : writer.w])
            if (i + 1) % 10 == 0:
                log.info("synth-video: %d / %d frames", i + 1, cfg.frames)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    buf = io.BytesIO()
    np.savez_compressed(buf, masks=np.stack(labels))
    write_bytes_atomic(out / f"{name}_labels.npz", buf.getvalue())
    STUDY5.to_json(out / "classes.json")
    meta = {"video": f"{name}.mp4", "labels": f"{name}_labels.npz", "frames": cfg.frames, "fps": cfg.fps,
            "width": writer.w, "height": writer.h, "seed": cfg.seed, "instruments": cfg.instruments, "speculum": cfg.speculum,
            "instrument_spans_s": [list(map(float, s)) for s in SceneAnimator(cfg).spans]}
    write_json_atomic(out / f"{name}.json", meta)
    return meta
