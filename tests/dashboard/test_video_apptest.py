"""The Video page through AppTest: the demo clip is described, a bad upload gives one clear error, nothing starts."""
from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]


def test_video_page_passes_the_members_choice(dashboard_env: dict[str, str], app_path, monkeypatch) -> None:  # noqa: ANN001
    from engine.app import jobs

    started: list[list[str]] = []

    def fake_start(jobs_dir, kind, args, **kw):  # noqa: ANN001, ANN003 - records what the page would run
        started.append(list(args))
        return {"id": "recorded"}

    monkeypatch.setattr(jobs, "start_job", fake_start)
    at = AppTest.from_file(str(app_path), default_timeout=90)
    at.run()
    at.switch_page("app_pages/video.py").run()
    at.select_slider(key="video_members").set_value(3).run()
    next(b for b in at.button if b.label == "Segment the clip").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert len(started) == 1 and started[0][0] == "segment-video"
    i = started[0].index("--members")
    assert started[0][i + 1] == "3"


def test_video_page_demo_clip_and_bad_upload(dashboard_env: dict[str, str], app_path) -> None:  # noqa: ANN001
    at = AppTest.from_file(str(app_path), default_timeout=90)
    at.run()
    at.switch_page("app_pages/video.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert "Segment every N-th frame" in [w.label for w in at.number_input]
    captions = " ".join(c.value for c in at.caption)
    assert "demo_clip.mp4" in captions and "640×480" in captions and "50 MB per upload" in captions
    assert any(b.label == "Segment the clip" for b in at.button)
    # the choice is shown when the recipe has > 1 pass; balanced only when it differs from full (several noises)
    spec = json.loads((REPO / "assets/demo_classifier/config.json").read_text())["spec"]
    speed = at.radio(key="video_passes")
    want = ["Full", "Balanced:", "Fast:"] if spec["n_noise"] > 1 else ["Full", "Fast:"]
    assert speed.label == "Speed" and [o.split()[0] for o in speed.options] == want
    assert speed.options[0].startswith(f"Full recipe ({spec['n_noise'] * 2} diffusion passes per frame)")
    # the ensemble-members choice: all by default; fewer is passed to segment-video as --members
    clf_cfg = json.loads((REPO / "assets/demo_classifier/config.json").read_text())
    members = at.select_slider(key="video_members")
    assert members.label == "Ensemble members used" and int(members.value) == int(members.options[-1])
    assert [int(o) for o in members.options] == list(range(1, int(members.options[-1]) + 1))
    assert int(members.options[-1]) == clf_cfg["fit"]["members"]
    at.get("file_uploader")[0].upload("broken.mp4", b"this is not a video", "video/mp4").run()
    assert not at.exception, [e.message for e in at.exception]
    errors = [e.value for e in at.error]
    assert any(e.startswith("broken.mp4: not a readable video") for e in errors), errors
    assert not any(b.label == "Segment the clip" for b in at.button)  # a bad clip cannot be started
