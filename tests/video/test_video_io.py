"""Reading videos: one-line errors naming the file, rotation applied, variable frame rate timestamps; joining segments."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from video_clips import disc_frames

from engine.video.reader import VideoError, probe, read_frames
from engine.video.writer import Mp4Writer, concat_mp4, count_frames


def _encode(path: Path, frames: list[np.ndarray], pts: list[int] | None = None, rotation: float | None = None) -> Path:
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"bf": "0"}
        s.codec_context.time_base = Fraction(1, 30)
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = pts[i] if pts else i
            f.time_base = Fraction(1, 30)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "voice.m4a"
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=22050)
        for i in range(10):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 22050, i * 1024
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(VideoError, match=r"^voice\.m4a: no video stream \(contains audio\)$"):
        probe(path)


@pytest.mark.parametrize("content,match", [(b"", r"^e\.mp4: empty file \(0 bytes\)$"),
                                           (b"GIF89a" + b"\0" * 300, r"^e\.mp4: not a readable video")])
def test_empty_and_garbage(tmp_path: Path, content: bytes, match: str) -> None:
    (tmp_path / "e.mp4").write_bytes(content)
    with pytest.raises(VideoError, match=match):
        probe(tmp_path / "e.mp4")


def test_pixel_limit(disc_clip: Path) -> None:
    with pytest.raises(VideoError, match=r"^disc\.mp4: 48×40 = 1,920 pixels per frame, more than the limit of 1,000$"):
        probe(disc_clip, max_pixels=1000)


def test_rotation_metadata_is_applied(tmp_path: Path) -> None:
    img = np.zeros((32, 48, 3), np.uint8)
    img[:, :10] = 255  # a white band on the left edge
    path = _encode(tmp_path / "phone.mp4", [img] * 3, rotation=-90)  # display: turn 90° clockwise
    info = probe(path)
    assert (info.rotation, info.width, info.height) == (90, 32, 48)
    frame = read_frames(path)[0][2]
    assert frame.shape == (48, 32, 3)
    assert frame[:8].mean() > 200 and frame[-8:].mean() < 30  # the band is now along the top


def test_variable_frame_rate_keeps_timestamps(tmp_path: Path) -> None:
    pts = [0, 1, 2, 6, 7, 15, 16]
    path = _encode(tmp_path / "vfr.mp4", [np.full((32, 48, 3), 10 * i, np.uint8) for i in range(7)], pts)
    assert probe(path).variable_rate
    times = [t for _, t, _ in read_frames(path)]
    np.testing.assert_allclose(times, [p / 30 for p in pts], atol=1e-6)


def test_segments_join_without_reencoding(tmp_path: Path) -> None:
    frames = disc_frames(11)
    parts = []
    for k, chunk in enumerate([frames[:4], frames[4:8], frames[8:]]):
        w = Mp4Writer(tmp_path / f"p{k}.mp4", 48, 40, 10, crf=12)
        for f in chunk:
            w.write(f)
        parts.append(w.close())
    assert concat_mp4(parts, tmp_path / "all.mp4") == 11 == count_frames(tmp_path / "all.mp4")
    got = [f for _, _, f in read_frames(tmp_path / "all.mp4")]
    assert [round(t, 3) for _, t, _ in read_frames(tmp_path / "all.mp4")] == [i / 10 for i in range(11)]
    for i, a in enumerate(got):  # each decoded frame is nearest to its own source frame: content in order
        dist = [np.abs(a.astype(int) - b.astype(int)).mean() for b in frames]
        assert int(np.argmin(dist)) == i and dist[i] < 10
    assert not list(tmp_path.glob(".*.part"))
