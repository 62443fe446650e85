"""Reading videos with PyAV: a probe that refuses bad files with one line, and a frame iterator.

Every problem with an input video is a `VideoError` (a ValueError, so the CLI prints one line and exits 2)
that names the file: empty, not a video, audio only, a codec this FFmpeg cannot decode, more pixels than
`engine.data.images.MAX_PIXELS`, corrupt or truncated data. Rotation metadata (phone clips) is applied, so
frames come out upright; variable frame rate is fine: every frame carries its own timestamp.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..data.images import MAX_PIXELS

log = logging.getLogger(__name__)


class VideoError(ValueError):
    """A video that cannot be used; the message is one line and starts with the file name."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a clip's video stream (sizes after rotation)."""

    path: str
    width: int
    height: int
    rotation: int  # degrees applied to decoded frames (0, 90, 180, 270)
    fps: float  # average frame rate
    frames: int  # frame count from the container (0 = unknown)
    duration: float  # seconds (0 = unknown)
    codec: str
    variable_rate: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _name(path: str | Path) -> str:
    return Path(path).name


def _open(path: str | Path) -> av.container.InputContainer:
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{_name(p)}: no such file")
    if p.is_dir():
        raise VideoError(f"{_name(p)}: is a directory, not a video")
    if os.path.getsize(p) == 0:
        raise VideoError(f"{_name(p)}: empty file (0 bytes)")
    try:
        return av.open(str(p), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise VideoError(f"{_name(p)}: not a readable video ({_short(e)})") from None


def _short(e: BaseException) -> str:
    msg = str(e).split("\n")[0]
    return msg.split(": '")[0][:120] or type(e).__name__


def _rotation(stream: av.video.stream.VideoStream, first: av.VideoFrame | None) -> int:
    """Clockwise degrees that make frames upright (display matrix / 'rotate' tag)."""
    rot = 0.0
    if first is not None:
        rot = float(getattr(first, "rotation", 0) or 0)
    if not rot:
        try:
            rot = -float(stream.metadata.get("rotate", 0))
        except (TypeError, ValueError):
            rot = 0.0
    return int(round(-rot / 90.0)) % 4 * 90  # FFmpeg's rotation is counter-clockwise


def probe(path: str | Path, max_pixels: int = MAX_PIXELS) -> VideoInfo:
    """Open a video, check it is decodable and within the pixel limit, and describe it."""
    name = _name(path)
    with _open(path) as container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise VideoError(f"{name}: no video stream (contains {', '.join(kinds)})")
        stream = container.streams.video[0]
        codec = stream.codec_context.name if stream.codec_context is not None else "unknown"
        w, h = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if w * h > max_pixels:
            raise VideoError(f"{name}: {w}×{h} = {w * h:,} pixels per frame, more than the limit of {max_pixels:,}")
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except av.error.FFmpegError as e:
            raise VideoError(f"{name}: cannot decode the {codec} video stream ({_short(e)})") from None
        if first is None:
            raise VideoError(f"{name}: the video stream holds no decodable frames (corrupt, truncated or unsupported "
                             f"codec {codec})")
        w, h = first.width, first.height
        if w * h > max_pixels:
            raise VideoError(f"{name}: {w}×{h} = {w * h:,} pixels per frame, more than the limit of {max_pixels:,}")
        rot = _rotation(stream, first)
        if rot in (90, 270):
            w, h = h, w
        avg = stream.average_rate
        base = stream.guessed_rate or avg
        fps = float(avg) if avg else float(base or 0)
        vfr = bool(avg and base and abs(float(avg) - float(base)) > 0.01 * float(base))
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else \
            (container.duration / 1e6 if container.duration else 0.0)
    return VideoInfo(str(path), w, h, rot, fps, int(stream.frames or 0), duration, codec, vfr)


def _upright(arr: np.ndarray, rotation: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(arr, k=-(rotation // 90))) if rotation else arr


def iter_frames(path: str | Path, info: VideoInfo | None = None) -> Iterator[tuple[int, float, av.VideoFrame]]:
    """(index, seconds, frame) of every decoded frame in display order; VideoError on corrupt data.

    A stream that ends more than one frame before the count its container announces is reported as
    truncated (after the frames before the cut have been yielded).
    """
    info = info or probe(path)
    name = _name(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base
        i, t_prev = 0, -1.0
        try:
            for frame in container.decode(stream):
                t = float(frame.pts * tb) if frame.pts is not None and tb else (i / info.fps if info.fps else i)
                if t <= t_prev:  # broken or missing timestamps: keep order, never go back in time
                    t = t_prev + (1.0 / info.fps if info.fps else 1e-3)
                t_prev = t
                yield i, t, frame
                i += 1
        except av.error.FFmpegError as e:
            raise VideoError(f"{name}: corrupt or truncated video data after frame {i} ({_short(e)})") from None
    if info.frames and i < info.frames - 1:
        raise VideoError(f"{name}: truncated: decoded {i} of the {info.frames} frames the container announces")
    if i == 0:
        raise VideoError(f"{name}: no decodable frames")


def to_rgb(frame: av.VideoFrame, rotation: int) -> np.ndarray:
    """Upright uint8 H×W×3 RGB of a decoded frame."""
    return _upright(frame.to_ndarray(format="rgb24"), rotation)


def read_frames(path: str | Path, every: int = 1, limit: int | None = None) -> list[tuple[int, float, np.ndarray]]:
    """All (index, seconds, RGB) frames of a clip, every `every`-th, at most `limit` (small clips, tests, page)."""
    info = probe(path)
    out = []
    for i, t, frame in iter_frames(path, info):
        if i % every == 0:
            out.append((i, t, to_rgb(frame, info.rotation)))
            if limit is not None and len(out) >= limit:
                break
    return out
