"""segment-video --passes: fast = exactly one UNet pass per frame, labels close to full; modes never mix on resume."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engine.errors import UserError
from engine.segmentation.classifier import load_classifier
from engine.video.pipeline import PASSES, VideoConfig, feature_plan, segment_video

REPO = Path(__file__).resolve().parents[2]
DEMO_CLF = REPO / "assets/demo_classifier"
DEMO_CLIP = REPO / "assets/demo_video/demo_clip.mp4"


def _count_unet_images(clf) -> list[int]:
    """Wrap the UNet so every forward records how many frames it saw (images / timesteps per frame)."""
    seen: list[int] = []
    model = clf.run.model
    original = model.forward_features
    n_t = len(clf.spec.steps)

    def counted(x, t, blocks):
        assert x.shape[0] % n_t == 0
        seen.append(x.shape[0] // n_t)
        return original(x, t, blocks)

    model.forward_features = counted
    return seen


@pytest.mark.skipif(not (DEMO_CLF / "weights.pt").is_file() or not DEMO_CLIP.is_file(), reason="demo assets absent")
def test_passes_count_unet_forwards_and_stay_close_to_full(tmp_path: Path) -> None:
    clf = load_classifier(DEMO_CLF, "cpu", use_cache=False)
    assert clf.fit_config.flip_tta  # the shipped recipe adds the mirrored frame
    clf.spec = replace(clf.spec, n_noise=3)  # the same ensemble on 3-noise features: all three plans differ
    plans = {mode: feature_plan(clf, mode) for mode in PASSES}
    assert (plans["full"].spec.n_noise, plans["full"].flip, plans["full"].unet_passes) == (3, True, 6)
    assert (plans["balanced"].spec.n_noise, plans["balanced"].flip, plans["balanced"].unet_passes) == (1, True, 2)
    assert (plans["fast"].spec.n_noise, plans["fast"].flip, plans["fast"].unet_passes) == (1, False, 1)
    for plan in plans.values():
        assert plan.spec.steps == clf.spec.steps and plan.spec.blocks == clf.spec.blocks
    seen = _count_unet_images(clf)
    cfg = dict(every=15, batch=4, chunk=64)  # frames 0, 15, 30, 45 of the 60 (tools in and out)
    masks, summaries = {}, {}
    for mode in ("fast", "balanced", "full"):
        seen.clear()
        summaries[mode] = segment_video(clf, DEMO_CLIP, tmp_path / mode, VideoConfig(passes=mode, **cfg))
        frames = summaries[mode]["frames"]
        assert frames == 4
        per_frame = plans[mode].unet_passes
        assert sum(seen) == per_frame * frames and len(seen) == per_frame, (mode, seen)  # one batch of 4 frames
        assert summaries[mode]["unet_passes_per_frame"] == per_frame
        assert summaries[mode]["manifest"]["settings"]["passes"] == mode
        assert summaries[mode]["manifest"]["features"] == plans[mode].to_dict()
        with np.load(tmp_path / mode / "masks.npz") as z:
            masks[mode] = z["masks"]
    assert summaries["fast"]["manifest"]["features"] == {"n_noise": 1, "flip": False, "unet_passes_per_frame": 1}
    for mode, floor in (("fast", 0.975), ("balanced", 0.99)):
        agree = (masks[mode] == masks["full"]).mean(axis=(1, 2))
        # measured 2026-11-24 on these 4 frames: fast 0.9834–0.9859 of the pixels per frame (0.983–0.991 over
        # the clip), balanced 0.997 over the clip; the margin covers thread-count rounding, not another path
        assert agree.min() >= floor and agree.mean() >= floor + 0.005, (mode, agree)
        assert not (masks[mode] == masks["full"]).all()  # it really is a different feature path


def test_the_command_line_offers_every_plan() -> None:
    from engine.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["segment-video", "c.mp4", "--classifier", "c", "--out", "o", "--passes", "balanced"])
    assert args.passes == "balanced"
    sub = next(a for a in parser._actions if a.dest == "command" or getattr(a, "choices", None) and
               "segment-video" in a.choices)
    action = next(a for a in sub.choices["segment-video"]._actions if a.dest == "passes")
    assert tuple(action.choices) == PASSES


@pytest.fixture(scope="module")
def tiny_clf(tiny_clf_dir: Path):
    return load_classifier(tiny_clf_dir, "cpu", use_cache=False)


def _interrupt(clf, clip: Path, out: Path, cfg: VideoConfig) -> None:
    def stop_at_once(p: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        segment_video(clf, clip, out, cfg, progress=stop_at_once)


def test_resume_cannot_mix_modes(tiny_clf, disc_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    _interrupt(tiny_clf, disc_clip, out, VideoConfig(chunk=4, passes="fast"))
    stored = json.loads((out / ".parts/manifest.json").read_text())
    assert stored["settings"]["passes"] == "fast" and stored["features"]["unet_passes_per_frame"] == 1
    with pytest.raises(UserError, match=r"different video, classifier or settings .*\(differs: settings\.passes\)"):
        segment_video(tiny_clf, disc_clip, out, VideoConfig(chunk=4, passes="full"), resume=True)
    done = segment_video(tiny_clf, disc_clip, out, VideoConfig(chunk=4, passes="fast"), resume=True)
    assert done["frames"] == 13 and done["passes"] == "fast"
    with pytest.raises(FileExistsError, match="already holds a finished"):  # a finished fast run is not a full one
        segment_video(tiny_clf, disc_clip, out, VideoConfig(chunk=4, passes="full"), resume=True)
    with pytest.raises(UserError, match="--passes must be one of full, balanced, fast, got 'quick'"):
        VideoConfig(passes="quick")


def test_interrupted_run_from_before_passes_resumes_as_full(tiny_clf, disc_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    _interrupt(tiny_clf, disc_clip, out, VideoConfig(chunk=4))
    mpath = out / ".parts/manifest.json"
    old = json.loads(mpath.read_text())
    del old["features"], old["settings"]["passes"]  # what a run started before --passes existed wrote
    mpath.write_text(json.dumps(old))
    with pytest.raises(UserError, match=r"\(differs: features, settings\.passes\)"):
        segment_video(tiny_clf, disc_clip, out, VideoConfig(chunk=4, passes="fast"), resume=True)
    assert segment_video(tiny_clf, disc_clip, out, VideoConfig(chunk=4), resume=True)["frames"] == 13
