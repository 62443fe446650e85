"""segment-video --streams N: batches computed by N threads, outputs identical to one stream, in order."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import run_engine
from video_clips import disc_frames, write_clip

from engine.errors import UserError
from engine.segmentation.classifier import load_classifier
from engine.video import outputs
from engine.video.pipeline import VideoConfig, segment_video
from engine.video.streams import OrderedStreams, default_streams


@pytest.fixture(scope="module")
def clf(tiny_clf_dir: Path):
    return load_classifier(tiny_clf_dir, "cpu", use_cache=False)


@pytest.fixture
def one_thread():
    """Both runs with one torch thread per forward: then the streams' outputs must equal one stream's exactly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _outputs(out: Path) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    with np.load(out / "masks.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return pd.read_csv(out / "table.csv"), arrays


@pytest.mark.parametrize("streams,batch,chunk,smooth", [(2, 1, 4, 0), (3, 2, 5, 2), (2, 3, 64, 1)])
def test_streams_give_one_streams_outputs_bit_for_bit(clf, disc_clip: Path, tmp_path: Path, one_thread,
                                                      streams: int, batch: int, chunk: int, smooth: int) -> None:
    cfg = VideoConfig(batch=batch, chunk=chunk, smooth=smooth)
    ref = segment_video(clf, disc_clip, tmp_path / "one", cfg)
    got = segment_video(clf, disc_clip, tmp_path / "many", VideoConfig(batch=batch, chunk=chunk, smooth=smooth,
                                                                       streams=streams))
    assert (ref["streams"], got["streams"], got["threads_per_stream"]) == (1, streams, 1)
    assert got["manifest"] == ref["manifest"]  # how the frames were computed is not part of what was asked
    assert torch.get_num_threads() == 1  # restored after the run
    t_ref, a_ref = _outputs(tmp_path / "one")
    t_got, a_got = _outputs(tmp_path / "many")
    pd.testing.assert_frame_equal(t_ref, t_got)
    assert a_ref.keys() == a_got.keys()
    for k in a_ref:
        np.testing.assert_array_equal(a_ref[k], a_got[k], err_msg=k)
    assert got["frames"] == ref["frames"] == 13 == len(t_got)


def test_streams_resume_a_run_cut_in_one_stream(clf, tmp_path: Path, one_thread) -> None:
    clip = write_clip(tmp_path / "c.mp4", disc_frames(20, seed=2))
    ref = segment_video(clf, clip, tmp_path / "ref", VideoConfig(chunk=4, batch=2, smooth=1))
    out = tmp_path / "cut"
    seen = [0]

    def stop_after_nine(p: dict) -> None:
        seen[0] = p["done"]
        if p["done"] >= 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        segment_video(clf, clip, out, VideoConfig(chunk=4, batch=2, smooth=1, streams=2), progress=stop_after_nine)
    assert torch.get_num_threads() == 1 and not any((out / f).exists() for f in outputs.FINAL_FILES)
    got = segment_video(clf, clip, out, VideoConfig(chunk=4, batch=2, smooth=1), resume=True)
    assert 0 < got["processed_frames_this_run"] < 20 == got["frames"] == ref["frames"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ref" / "table.csv"), pd.read_csv(out / "table.csv"))
    with np.load(tmp_path / "ref" / "masks.npz") as za, np.load(out / "masks.npz") as zb:
        np.testing.assert_array_equal(za["masks"], zb["masks"])


def test_ordered_streams_run_in_parallel_and_return_in_order() -> None:
    lock, running, peak = threading.Lock(), [0], [0]

    def slow(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02 if i % 3 else 0.06)  # every third item is slow: later ones finish first
        with lock:
            running[0] -= 1
        return i * i

    got: list[int] = []
    with OrderedStreams(slow, 3) as s:
        for i in range(10):
            got.extend(s.submit(i))
        got.extend(s.drain())
    assert got == [i * i for i in range(10)] and peak[0] == 3


def test_ordered_streams_error_reaches_the_caller_and_threads_are_restored() -> None:
    before = torch.get_num_threads()

    def fails_on_two(i: int) -> int:
        if i == 2:
            raise RuntimeError("item 2 is bad")
        return i

    got: list[int] = []
    with pytest.raises(RuntimeError, match="^item 2 is bad$"):
        with OrderedStreams(fails_on_two, 2) as s:
            for i in range(6):
                got.extend(s.submit(i))
            got.extend(s.drain())
    assert got == [0, 1] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match=r"^streams must be >= 1, got 0$"):
        OrderedStreams(fails_on_two, 0)
    with pytest.raises(UserError, match=r"^--streams must be >= 1, got 0$"):
        VideoConfig(streams=0)


def test_one_stream_runs_in_the_calling_thread_and_leaves_threads_alone() -> None:
    before = torch.get_num_threads()
    with OrderedStreams(lambda _: threading.current_thread(), 1) as s:
        assert list(s.submit(0)) == [threading.current_thread()] and s.threads_per_stream == before
        assert torch.get_num_threads() == before


def test_default_streams() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert default_streams(torch.device("cpu")) == 2
        assert default_streams(torch.device("cuda")) == 1  # no CUDA needed: only the device type is read
        torch.set_num_threads(1)
        assert default_streams(torch.device("cpu")) == 1
    finally:
        torch.set_num_threads(before)


def test_cli_streams_flag(tiny_clf_dir: Path, disc_clip: Path, tmp_path: Path) -> None:
    r = run_engine("segment-video", str(disc_clip), "--classifier", str(tiny_clf_dir), "--out", str(tmp_path / "o"),
                   "--streams", "2", "--threads", "2", "--chunk", "5", "--batch", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert '"streams": 2' in r.stdout
    bad = run_engine("segment-video", str(disc_clip), "--classifier", str(tiny_clf_dir), "--out",
                     str(tmp_path / "b"), "--streams", "0")
    assert bad.returncode == 2 and "--streams" in bad.stderr and not (tmp_path / "b").exists()
    for flag, value, why in (("--streams", "17", "each holds its batches' frames"),
                             ("--batch", "257", "frames held per batch"),
                             ("--chunk", "4097", "a chunk's masks are held until it is sealed")):
        big = run_engine("segment-video", str(disc_clip), "--classifier", str(tiny_clf_dir), "--out",
                         str(tmp_path / "b"), flag, value)
        last = big.stderr.strip().splitlines()[-1]
        assert big.returncode == 2 and last.endswith(
            f"error: argument {flag}: must be at most {int(value) - 1:,} ({why}), got {int(value):,}"), last
    assert not (tmp_path / "b").exists()


def test_a_caller_leaving_on_an_exception_stops_the_running_items_between_steps() -> None:
    steps: list[int] = []

    def long_item(i: int) -> int:
        for k in range(200):  # 200 steps of 10 ms: 2 s if nobody stops it
            time.sleep(0.01)
            steps.append(k)
            s.raise_if_stopping()
        return i

    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        with OrderedStreams(long_item, 2) as s:
            for i in range(2):
                assert list(s.submit(i)) == []  # both running, none finished
            time.sleep(0.1)
            raise KeyboardInterrupt
    assert time.perf_counter() - t0 < 1.0 and len(steps) < 100 and s.stopping.is_set()
    with OrderedStreams(long_item, 2) as quiet:
        assert not quiet.stopping.is_set()
    assert not quiet.stopping.is_set()  # a normal exit does not stop anything
