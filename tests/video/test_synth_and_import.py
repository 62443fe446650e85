"""data synth-video (exact labels, tools in and out) and data import-video (sampling, near duplicates, errors)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from video_clips import disc_frames, write_clip

from engine.data.classes import STUDY5
from engine.data.synth_scene import scene_labels
from engine.video.reader import read_frames
from engine.video.synth_video import ClipConfig, SceneAnimator, clip_frames, write_clip as write_synth
from helpers import run_engine


def test_synth_clip_labels_are_the_scene_geometry(tmp_path: Path) -> None:
    cfg = ClipConfig(width=96, height=72, fps=5, seconds=3, seed=3)
    meta = write_synth(tmp_path, cfg, "c")
    with np.load(tmp_path / "c_labels.npz") as z:
        labels = z["masks"]
    assert labels.shape == (15, 72, 96) and meta["frames"] == 15
    anim = SceneAnimator(cfg)
    for i in (0, 7, 14):
        full = scene_labels(anim.scene(i / cfg.fps), 96)
        assert (labels[i] == full[12:84]).all()  # centre crop of the square render
    frames = read_frames(tmp_path / "c.mp4")
    assert len(frames) == 15 and frames[0][2].shape == (72, 96, 3)
    present = (labels == STUDY5.index("instrument")).mean(axis=(1, 2)) >= 0.001
    assert present.any() and not present.all()  # tools come and go
    assert json.loads((tmp_path / "classes.json").read_text())["classes"][0]["name"] == "pupil"
    # the eye moves and the pupil changes size
    pupil = (labels == 0).sum(axis=(1, 2))
    assert pupil.max() > 1.1 * pupil.min()


def test_synth_clip_is_deterministic() -> None:
    cfg = ClipConfig(width=64, height=48, fps=4, seconds=1, seed=1)
    a, b = list(clip_frames(cfg)), list(clip_frames(cfg))
    assert all((x[0] == y[0]).all() and (x[1] == y[1]).all() for x, y in zip(a, b))


def test_import_video_every_fps_and_duplicates(tmp_path: Path) -> None:
    frames = disc_frames(10)
    frames = frames[:5] + [frames[4]] * 4 + frames[5:]  # a still stretch: 4 repeats of frame 4
    clip = write_clip(tmp_path / "op clip.mp4", frames, fps=10)
    r = run_engine("data", "import-video", clip, tmp_path / "a", "--every", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["decoded"] == 14 and out["skipped_duplicates"] >= 4 and out["kept"] == 14 - out["skipped_duplicates"]
    split = json.loads((tmp_path / "a" / "split.json").read_text())
    assert split["train"] == [] and len(split["unlabeled"]) == out["kept"] and split["unlabeled"][0] == "op_clip_000000"
    assert not list((tmp_path / "a" / "masks").glob("*.png"))  # every frame unlabelled
    assert sorted(p.stem for p in (tmp_path / "a" / "images").iterdir()) == sorted(split["unlabeled"])
    r = run_engine("data", "import-video", clip, tmp_path / "b", "--fps", "2.5", "--dedup", "0", "--no-progress")
    assert json.loads(r.stdout.strip().splitlines()[-1])["kept"] == 4  # t = 0, 0.4, 0.8, 1.2 s
    names = sorted(p.stem for p in (tmp_path / "b" / "images").iterdir())
    assert names == ["op_clip_000000", "op_clip_000004", "op_clip_000008", "op_clip_000012"]


def test_import_video_bad_file_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(b"\0\0\0\x18ftypmp42" + b"\x01" * 500)
    r = run_engine("data", "import-video", bad, tmp_path / "out", "--every", "2", "--no-progress")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: cut.mp4: ")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
