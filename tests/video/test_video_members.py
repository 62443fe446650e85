"""segment-video --members N: the first N ensemble members, exactly; bad N refused by name; never mixed on resume."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_engine
from test_fused_prediction import _model

from engine.errors import UserError
from engine.segmentation.classifier import load_classifier
from engine.video.pipeline import VideoConfig, _manifest_diff, ensemble_head, segment_video


@pytest.fixture(scope="module")
def clf(tiny_clf_dir: Path):
    return load_classifier(tiny_clf_dir, "cpu", use_cache=False)


@pytest.mark.parametrize("k", [1, 2, 5, 6])
def test_sub_ensemble_logits_are_the_first_members_of_the_whole(k: int) -> None:
    g = torch.Generator().manual_seed(1)
    maps = [torch.randn(2, 5, 4, 6, generator=g), torch.randn(2, 3, 8, 12, generator=g)]
    model = _model(8, members=6)
    whole = model.predict_logits_batch(maps, (8, 12))
    sub = model.subset(k)
    assert sub.members == k and (sub is model) == (k == 6)
    torch.testing.assert_close(sub.predict_logits_batch(maps, (8, 12)), whole[:, :k], rtol=0, atol=0)
    for bad in (0, 7):
        with pytest.raises(ValueError, match=r"a sub-ensemble needs 1\.\.6 members, got"):
            model.subset(bad)


def test_members_flag_uses_that_many_and_is_part_of_the_run(clf, disc_clip: Path, tmp_path: Path) -> None:
    total = clf.model.members
    assert total >= 2, "the tiny classifier needs a sub-ensemble to test"
    whole = segment_video(clf, disc_clip, tmp_path / "all", VideoConfig(chunk=5, batch=4))
    one = segment_video(clf, disc_clip, tmp_path / "one", VideoConfig(chunk=5, batch=4, members=1))
    assert (whole["ensemble_members"], one["ensemble_members"]) == (total, 1)
    assert whole["classifier_members"] == one["classifier_members"] == total
    assert one["manifest"]["settings"]["members"] == 1 and whole["manifest"]["settings"]["members"] == 0
    with np.load(tmp_path / "one" / "masks.npz") as z:
        js = z["uncertainty"].astype(np.float32)
    assert float(np.abs(js).max()) == 0.0  # one member cannot disagree with itself: the JS map is exactly 0
    with pytest.raises(UserError, match=rf"^--members {total + 1}: the classifier has {total} ensemble members$"):
        ensemble_head(clf, total + 1)
    with pytest.raises(UserError, match=r"^--members must be >= 1 \(or 0 = all\), got -1$"):
        VideoConfig(members=-1)


def test_resume_refuses_another_member_count(clf, disc_clip: Path, tmp_path: Path) -> None:
    def stop_at_once(p: dict) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        segment_video(clf, disc_clip, out, VideoConfig(chunk=4, members=1), progress=stop_at_once)
    with pytest.raises(UserError, match=r"differs: settings\.members"):
        segment_video(clf, disc_clip, out, VideoConfig(chunk=4), resume=True)
    assert segment_video(clf, disc_clip, out, VideoConfig(chunk=4, members=1), resume=True)["frames"] == 13


def test_manifests_written_before_members_existed_mean_all_members() -> None:
    new = {"settings": {"passes": "full", "members": 0}, "features": {"n_noise": 1}}
    old = {"settings": {"passes": "full"}, "features": {"n_noise": 1}}
    assert _manifest_diff(old, new) == []
    assert _manifest_diff(old, {**new, "settings": {"passes": "full", "members": 3}}) == ["settings.members"]


def test_cli_members_flag(tiny_clf_dir: Path, disc_clip: Path, tmp_path: Path) -> None:
    r = run_engine("segment-video", str(disc_clip), "--classifier", str(tiny_clf_dir), "--out", str(tmp_path / "o"),
                   "--members", "999", "--no-progress")
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "--members 999: the classifier has" in last and "ensemble members" in last
    assert not (tmp_path / "o" / "summary.json").exists()
    r = run_engine("segment-video", str(disc_clip), "--classifier", str(tiny_clf_dir), "--out", str(tmp_path / "p"),
                   "--members", "0", "--no-progress")
    assert r.returncode == 2 and "--members" in r.stderr

