"""Writing H.264 MP4 with PyAV: one encoder per segment, and segments joined without re-encoding.

Segments (one per chunk of frames) are what make `--resume` and multi-process runs possible: each is a
complete MP4 of its own; `concat_mp4` copies their packets into one file with continuous timestamps.
Files are written under a temporary name and renamed when closed, so a half-written MP4 never exists.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CODEC = "libx264"
TIME_BASE = Fraction(1, 90000)


def even(v: int) -> int:
    """H.264 with 4:2:0 chroma needs even sides: round down (at least 2)."""
    return max(2, v - v % 2)


class Mp4Writer:
    """Encode RGB frames (H×W×3 uint8, cropped to even sides) to an MP4 at a fixed frame rate."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float, crf: int = 23, preset: str = "veryfast"):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.part")
        self.w, self.h = even(width), even(height)
        self.container = av.open(str(self.tmp), mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self.stream = self.container.add_stream(CODEC, rate=rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.w, self.h, "yuv420p"
        # no B-frames: packets stay in display order (dts = pts), so segments join by a plain timestamp shift
        self.stream.options = {"crf": str(crf), "preset": preset, "bf": "0"}
        self.stream.codec_context.time_base = 1 / rate
        self.count = 0

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: self.h, : self.w]), format="rgb24")
        frame.pts = self.count
        self.count += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> Path:
        """Flush, close and rename into place."""
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
        self.tmp.unlink(missing_ok=True)


def concat_mp4(parts: Sequence[str | Path], out: str | Path) -> int:
    """Join MP4 segments of one encoder setting (same size, rate) into `out` by copying packets; frame count."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.part")
    n = 0
    try:
        with av.open(str(tmp), mode="w", format="mp4") as dst:
            ostream = None
            offset = 0
            for part in parts:
                with av.open(str(part)) as src:
                    istream = src.streams.video[0]
                    if ostream is None:
                        ostream = dst.add_stream_from_template(istream)
                    last = 0
                    step = 1
                    for packet in src.demux(istream):
                        if packet.dts is None:  # the demuxer's flush packet
                            continue
                        packet.dts += offset
                        if packet.pts is not None:
                            packet.pts += offset
                        step = int(packet.duration or step)
                        last = max(last, int(packet.pts if packet.pts is not None else packet.dts) + step)
                        packet.stream = ostream
                        dst.mux(packet)
                        n += 1
                    offset = max(offset, last)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def count_frames(path: str | Path) -> int:
    """Decoded frame count of a video (used to check what was written)."""
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))
