"""segment-video end to end on small clips: outputs, equality with the still-frame path, resume, errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from video_clips import disc_frames, write_clip
from helpers import run_engine

from engine.segmentation.classifier import load_classifier
from engine.outputs.segment_outputs import segment_array
from engine.uncertainty.frame_scores import UNCALIBRATED_THRESHOLD
from engine.video import outputs
from engine.video.pipeline import VideoConfig, segment_video
from engine.video.writer import count_frames


@pytest.fixture(scope="module")
def clf(tiny_clf_dir: Path):
    return load_classifier(tiny_clf_dir, "cpu", use_cache=False)


def test_outputs_and_equality_with_still_path(clf, disc_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = segment_video(clf, disc_clip, out, VideoConfig(chunk=5, batch=3))
    assert sorted(p.name for p in out.iterdir()) == sorted(outputs.FINAL_FILES)
    assert count_frames(out / "overlay.mp4") == 13 == summary["frames"] == summary["overlay_frames"]
    with np.load(out / "masks.npz") as z:
        masks, index, unc = z["masks"], z["frame_index"], z["uncertainty"]
    assert masks.shape == (13, 40, 48) and masks.dtype == np.uint8 and list(index) == list(range(13))
    assert unc.shape[0] == 13 and unc.dtype == np.float16
    import zipfile

    with zipfile.ZipFile(out / "masks.npz") as zf:  # class ids deflated; the float16 JS maps stored (incompressible)
        kinds = {i.filename: i.compress_type for i in zf.infolist()}
    assert kinds == {"masks.npy": zipfile.ZIP_DEFLATED, "uncertainty.npy": zipfile.ZIP_STORED,
                     "frame_index.npy": zipfile.ZIP_DEFLATED, "time_s.npy": zipfile.ZIP_DEFLATED}
    table = pd.read_parquet(out / "table.parquet")
    csv = pd.read_csv(out / "table.csv")
    assert list(table["frame"]) == list(range(13)) == list(csv["frame"])
    # areas are shares of the mask's pixels; flicker is the share of changed pixels vs the previous frame
    np.testing.assert_allclose(table["area_disc"], (masks == 1).mean(axis=(1, 2)), atol=1e-9)
    np.testing.assert_allclose(table["flip_share"][1:], (masks[1:] != masks[:-1]).mean(axis=(1, 2)), atol=1e-9)
    # each mask equals what the still-frame path (`segment`) gives for that decoded frame
    from engine.video.reader import read_frames

    for i, _t, rgb in read_frames(disc_clip):
        labels = segment_array(clf, rgb.astype(np.float32) / 255, str(i)).labels
        assert (labels == masks[i]).mean() >= 0.999
    unc_ref = table["uncertainty"].to_numpy()
    assert np.isfinite(unc_ref).all() and (table["review"] == (unc_ref > UNCALIBRATED_THRESHOLD)).all()


def test_every_start_end_select_frames(clf, disc_clip: Path, tmp_path: Path) -> None:
    segment_video(clf, disc_clip, tmp_path / "o", VideoConfig(every=2, start=0.3, end=1.05, chunk=2))
    table = pd.read_csv(tmp_path / "o" / "table.csv")
    assert list(table["frame"]) == [4, 6, 8, 10]  # 10 fps: frames at 0.3 s … 1.0 s, even indices
    assert count_frames(tmp_path / "o" / "overlay.mp4") == 4


def interrupt_after_five(clf, clip: Path, out: Path, cfg: VideoConfig) -> None:  # noqa: ANN001
    """Start segment-video on `clip` and stop it (as Ctrl-C would) once five frames are done."""
    def stop_after_five(p: dict) -> None:
        if p["done"] >= 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        segment_video(clf, clip, out, cfg, progress=stop_after_five)


def test_interrupted_run_resumes_to_identical_outputs(clf, disc_clip: Path, tmp_path: Path) -> None:
    cfg = VideoConfig(chunk=4, batch=2, smooth=1)
    ref = segment_video(clf, disc_clip, tmp_path / "ref", cfg)
    out = tmp_path / "cut"
    interrupt_after_five(clf, disc_clip, out, cfg)
    assert not any((out / f).exists() for f in outputs.FINAL_FILES)  # nothing that looks complete
    assert outputs.chunk_done(out, 0)
    # the chunk being filled when the run stopped left nothing behind (its open overlay segment was aborted)
    assert sorted(p.name for p in (out / outputs.PARTS).iterdir()) == [
        "chunk_00000.json", "chunk_00000.mp4", "chunk_00000.npz", "manifest.json"]
    with pytest.raises(FileExistsError, match="--resume"):
        segment_video(clf, disc_clip, out, cfg)
    with pytest.raises(ValueError, match="different"):
        segment_video(clf, disc_clip, out, VideoConfig(chunk=4, smooth=2), resume=True)
    got = segment_video(clf, disc_clip, out, cfg, resume=True)
    assert got["processed_frames_this_run"] < 13 and got["frames"] == ref["frames"] == 13
    a, b = pd.read_csv(tmp_path / "ref" / "table.csv"), pd.read_csv(out / "table.csv")
    pd.testing.assert_frame_equal(a, b)
    with np.load(tmp_path / "ref" / "masks.npz") as za, np.load(out / "masks.npz") as zb:
        assert (za["masks"] == zb["masks"]).all()
    assert not (out / outputs.PARTS).exists()


def test_smoothing_reduces_flicker(clf, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    frames = [np.clip(f.astype(int) + rng.normal(0, 40, f.shape), 0, 255).astype(np.uint8)
              for f in disc_frames(12, seed=3)]
    clip = write_clip(tmp_path / "noisy.mp4", frames)
    raw = segment_video(clf, clip, tmp_path / "raw", VideoConfig(chunk=5))
    smooth = segment_video(clf, clip, tmp_path / "smooth", VideoConfig(chunk=5, smooth=2))
    assert smooth["flicker"] < raw["flicker"]


def test_truth_scoring(tiny_clf_dir: Path, disc_clip: Path, tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "truth.npz", masks=np.zeros((13, 40, 48), np.uint8))  # all background
    r = run_engine("segment-video", disc_clip, "--classifier", tiny_clf_dir, "--out", tmp_path / "o",
                   "--truth", tmp_path / "truth.npz", "--no-progress", "--chunk", "6")
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout.strip().splitlines()[-1])
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert line["miou"] == summary["truth"]["miou"]
    table = pd.read_csv(tmp_path / "o" / "table.csv")
    with np.load(tmp_path / "o" / "masks.npz") as z:
        pred = z["masks"]
    # per frame: background IoU = predicted background share; the disc (absent from truth) scores 0 when predicted
    expect = [np.mean([(p == 0).mean(), 0.0]) if (p == 1).any() else (p == 0).mean() for p in pred]
    np.testing.assert_allclose(table["miou"], expect, atol=1e-6)


@pytest.mark.parametrize("content,match", [
    (b"", "empty file"),
    (b"this is not a video at all" * 10, "not a readable video"),
])
def test_bad_videos_one_line_and_nothing_written(tiny_clf_dir: Path, tmp_path: Path, content: bytes, match: str) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    r = run_engine("segment-video", bad, "--classifier", tiny_clf_dir, "--out", tmp_path / "o", "--no-progress")
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: bad.mp4: ") and match in err[0], r.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o" / f).exists() for f in outputs.FINAL_FILES)


def test_truncated_video_leaves_no_final_files(clf, tmp_path: Path) -> None:
    from engine.video.reader import VideoError

    clip = write_clip(tmp_path / "long.mp4", disc_frames(40))
    import av

    # rewrite with the index first (faststart) so a cut file still opens, then cut it
    fast = tmp_path / "fast.mp4"
    with av.open(str(clip)) as src, av.open(str(fast), "w", options={"movflags": "faststart"}) as dst:
        s = dst.add_stream_from_template(src.streams.video[0])
        for pkt in src.demux(src.streams.video[0]):
            if pkt.dts is not None:
                pkt.stream = s
                dst.mux(pkt)
    cut = tmp_path / "cut.mp4"
    data = fast.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VideoError, match=r"^cut\.mp4: .*(truncated|corrupt)"):
        segment_video(clf, cut, tmp_path / "o", VideoConfig(chunk=8))
    # the chunks before the cut are useless (a resume stops at the same frame): no .parts/, and no OUT,
    # which this run created
    assert not (tmp_path / "o").exists()
    keep = tmp_path / "mine"  # an OUT that existed before keeps what was in it
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(VideoError, match=r"^cut\.mp4: "):
        segment_video(clf, cut, keep, VideoConfig(chunk=8))
    assert sorted(p.name for p in keep.iterdir()) == ["notes.txt"]


def test_head_precision_choice_and_resume_manifest(clf, disc_clip: Path, tmp_path: Path) -> None:
    import torch

    from engine.video.pipeline import cpu_has_bf16, head_bf16

    assert head_bf16("bf16", torch.device("cpu")) and not head_bf16("float32", torch.device("cpu"))
    assert head_bf16("auto", torch.device("cpu")) == cpu_has_bf16()
    assert not head_bf16("auto", torch.device("cuda"))

    def stop_at_once(p: dict) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        segment_video(clf, disc_clip, out, VideoConfig(chunk=4, head_bf16=True), progress=stop_at_once)
    with pytest.raises(ValueError, match="different"):  # the precision is part of what a resume must match
        segment_video(clf, disc_clip, out, VideoConfig(chunk=4, head_bf16=False), resume=True)
    assert not any((tmp_path / "o" / f).exists() for f in outputs.FINAL_FILES)


def test_smoothing_averages_the_calibrated_probabilities(tiny_clf_dir: Path, tmp_path: Path) -> None:
    """segment-video honours the classifier's temperature: --smooth averages the probabilities the frame path
    reports (clf.predict_tensor(...).probs, calibrated), not the raw mean softmax."""
    import torch
    import torch.nn.functional as F

    from engine.data.transforms import resize_shorter, to_tensor
    from engine.video.reader import read_frames

    rng = np.random.default_rng(7)
    frames = [np.clip(f.astype(int) + rng.normal(0, 40, f.shape), 0, 255).astype(np.uint8)
              for f in disc_frames(6, seed=4)]
    clip = write_clip(tmp_path / "noisy.mp4", frames)
    hot = load_classifier(tiny_clf_dir, "cpu", use_cache=False)
    hot.temperature = 0.25  # strongly sharpened: averaging calibrated vs raw probabilities disagrees somewhere
    segment_video(hot, clip, tmp_path / "out", VideoConfig(chunk=3, batch=2, smooth=1))
    with np.load(tmp_path / "out" / "masks.npz") as z:
        masks = z["masks"]
    decoded = read_frames(clip)
    size, mult = hot.run.image_size, hot.run.model.downsample_factor
    preds = [hot.predict_tensor(to_tensor(resize_shorter(rgb, size, multiple=mult)[0])) for _i, _t, rgb in decoded]
    agree_cal, agree_raw = [], []
    for s, (_i, _t, rgb) in enumerate(decoded):
        window = range(max(0, s - 1), min(len(preds), s + 2))
        for key, agree in (("probs", agree_cal), ("raw_probs", agree_raw)):
            mean = torch.stack([getattr(preds[j], key) for j in window]).mean(0)
            ref = F.interpolate(mean[None], size=rgb.shape[:2], mode="bilinear", align_corners=False)[0].argmax(0)
            agree.append((ref.numpy() == masks[s]).mean())
    assert min(agree_cal) >= 0.999
    assert min(agree_raw) < 0.999  # the check can fail: raw averaging gives other masks here


def test_resume_refuses_a_refit_classifier_with_the_same_recipe(clf, disc_clip: Path, tmp_path: Path) -> None:
    """Same run and recipe, other ensemble weights (a refit): its frames must not be mixed with the first fit's."""
    import copy

    import torch

    cfg = VideoConfig(chunk=4, batch=2)
    out = tmp_path / "cut"
    interrupt_after_five(clf, disc_clip, out, cfg)
    refit = copy.copy(clf)
    refit.model = copy.deepcopy(clf.model)
    with torch.no_grad():
        next(refit.model.parameters()).add_(1e-3)
    assert refit.ensemble_digest() != clf.ensemble_digest() and refit.spec == clf.spec
    with pytest.raises(ValueError, match=r"differs: ensemble_hash"):
        segment_video(refit, disc_clip, out, cfg, resume=True)
    assert segment_video(clf, disc_clip, out, cfg, resume=True)["frames"] == 13  # the same fit resumes


def test_writer_streams_frames_while_the_chunk_is_still_computing(clf, disc_clip: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Overlays and masks are made frame by frame as soon as a frame is computed, not once its whole chunk is:
    with one chunk for the whole clip, the writer has finished frames before the last batch is computed."""
    import time

    batches: list[float] = []
    ticks: list[float] = []
    predict = clf.model.predict_logits_batch

    def slow_predict(*a, **k):  # noqa: ANN002, ANN003 - passes through
        batches.append(time.perf_counter())
        time.sleep(0.15)  # a slower UNet + head: the writer has time to work in between
        return predict(*a, **k)

    monkeypatch.setattr(clf.model, "predict_logits_batch", slow_predict)
    ref = segment_video(clf, disc_clip, tmp_path / "o", VideoConfig(chunk=64, batch=2),
                        progress=lambda p: ticks.append(time.perf_counter()))
    assert len(batches) == 7 and len(ticks) == 13 == ref["frames"]
    assert ticks[0] < batches[-1]  # the first frame was written before the last batch started
    assert sum(t < batches[-1] for t in ticks) >= 8
