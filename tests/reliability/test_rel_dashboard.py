"""Matrix rows on the dashboard: every odd upload on the Segment page, and 4 concurrent browser sessions.

Runs against the embedded default workspace (assets/), like a user would; skipped only when it is incomplete.
"""
from __future__ import annotations

import io
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dashboard_harness import (CHROMIUM, CHROMIUM_ARGS, REPO, needs_chromium, no_exception, rss_mb, settle,
                               streamlit_server, upload)
from helpers import run_engine
from odd_images import INVALID, VALID

ALLOWED = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def test_segment_page_mixed_odd_uploads(dashboard_env: dict[str, str]) -> None:
    """All odd files dropped at once: each bad one gets its own message naming it, each good one a mask of its
    size, the page keeps working (opacity change, a later good upload), and nothing raises."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=240)
    at.run()
    at.switch_page("app_pages/segment.py").run()
    assert not at.exception, [e.message for e in at.exception]
    # The uploader only accepts image extensions (Streamlit refuses others itself), so a PDF arrives renamed.
    invalid = {k: (f if f.endswith(ALLOWED) else f + ".png", d, pat) for k, (f, d, pat) in INVALID.items()}
    files = [(fname, data, "application/octet-stream") for fname, data, _ in [*VALID.values(), *invalid.values()]]
    at.get("file_uploader")[0].set_value(files).run()
    assert not at.exception, [e.message for e in at.exception]
    # per-frame verdicts ("Unlike the training frames", issue 12) are shown as errors too: count upload errors only
    errors = [e.value for e in at.error if not e.value.startswith("**Unlike the training frames")]
    assert len(errors) == len(invalid), errors
    for fname, _, pattern in invalid.values():
        hits = [e for e in errors if fname in e]
        assert len(hits) == 1 and re.search(pattern, hits[0]), (fname, errors)
        assert "Traceback" not in hits[0]
    results = at.session_state["seg_results"]
    by_name = {r.name: r for r in results.values()}
    for fname, _, hw in VALID.values():
        assert by_name[fname].labels.shape == hw, fname
    table = at.dataframe[0].value  # the multi-frame summary lists every good frame once
    assert sorted(table["frame"]) == sorted(f for f, _, _ in VALID.values())
    at.slider(key="seg_opacity").set_value(0.9).run()
    assert not at.exception
    buf = io.BytesIO()
    Image.fromarray(np.full((50, 60, 3), 90, np.uint8)).save(buf, format="PNG")
    at.get("file_uploader")[0].upload("later.png", buf.getvalue(), "image/png").run()
    assert not at.exception and "later.png" in {r.name for r in at.session_state["seg_results"].values()}


@pytest.fixture(scope="module")
def cli_masks(dashboard_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Frames of different sizes/formats and the CLI's index masks for them (the reference)."""
    ws = Path(dashboard_env["DIFFSEG_WORKSPACE"])
    frames = sorted((ws / "examples").glob("*"))[:3]
    frames.append(sorted((ws / "demo_data" / "images").glob("*"))[-1])
    d = tmp_path_factory.mktemp("load_frames")
    local = []
    for i, f in enumerate(frames):  # distinct names per session so a leak would be visible
        local.append(d / f"session{i}_{f.name}")
        shutil.copy(f, local[-1])
    out = d / "cli"
    res = run_engine("segment", *local, "--classifier", ws / "demo_classifier", "--out", out,
                     "--no-cache")
    assert res.returncode == 0, res.stderr[-2000:]
    return {p.name: np.asarray(Image.open(out / f"{p.stem}_mask.png")) for p in local} | {"_paths": local}


@needs_chromium
def test_four_concurrent_sessions_segment_correctly(dashboard_env: dict[str, str], cli_masks: dict,
                                                    tmp_path: Path) -> None:
    """4 browser sessions upload at once: each gets the CLI's mask for its own frame, sees only its own upload,
    and the server's memory stays bounded (models are shared, not loaded per session)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    paths: list[Path] = cli_masks["_paths"]
    t0 = time.time()
    with streamlit_server(dashboard_env, tmp_path / "server.log") as (url, proc), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        contexts = [browser.new_context(viewport={"width": 1300, "height": 1500}, accept_downloads=True)
                    for _ in paths]
        pages = [c.new_page() for c in contexts]
        # warm-up: one session loads the models once
        pages[0].goto(f"{url}/segment")
        settle(pages[0])
        warm_rss = rss_mb(proc.pid)
        for pg in pages[1:]:
            pg.goto(f"{url}/segment")
        for pg in pages[1:]:
            settle(pg)
        for pg, path in zip(pages, paths):  # all four uploads go in before any result is awaited
            upload(pg, path)
        for i, (pg, path) in enumerate(zip(pages, paths)):
            pg.get_by_text("prediction overlay").first.wait_for(timeout=90_000)
            settle(pg)
            no_exception(pg, f"session {i}")
            body = pg.inner_text("body")
            others = [q.name for q in paths if q != path]
            assert path.name in body and not any(o in body for o in others), (i, [o for o in others if o in body])
            with pg.expect_download() as dl:
                pg.get_by_text("Mask (indexed PNG)").first.click()
            got = np.asarray(Image.open(dl.value.path()))
            want = cli_masks[path.name]
            assert got.shape == want.shape, (path.name, got.shape, want.shape)
            assert (got == want).mean() > 0.999, (path.name, float((got == want).mean()))
        peak_rss = rss_mb(proc.pid)
        print(f"load test: server RSS {warm_rss:.0f} MB warm, {peak_rss:.0f} MB after 4 sessions, {time.time() - t0:.1f} s")
        browser.close()
    # 4 sessions' results (frames ≤ 480×270) are a few MB; a second copy of the models would be ~50+ MB more
    # per session. Bound: warm server + 350 MB for four concurrent feature extractions plus the unfamiliar-input
    # check's extra UNet passes (4 noise levels per frame; measured 260 MB over warm after issue 12).
    assert peak_rss < warm_rss + 350, (warm_rss, peak_rss)
    assert time.time() - t0 < 120
