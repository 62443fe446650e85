"""The Video page in a real headless Chromium: upload the demo clip, see progress, the timeline, a clicked frame.

Screenshots at 1440 and 1024 px wide go to test-artifacts/ (video_*.png).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from dashboard_harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    needs_chromium,
    no_exception,
    settle,
    streamlit_server,
    upload,
)

ARTIFACTS = REPO / "test-artifacts"
pytestmark = [needs_chromium, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(dashboard_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    with streamlit_server(dashboard_env, tmp_path_factory.mktemp("streamlit") / "server.log") as (url, _proc):
        yield url


def test_video_page_upload_progress_timeline_click(server: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    clip = Path(os.environ["DIFFSEG_WORKSPACE"]) / "demo_video" / "demo_clip.mp4"
    if not clip.is_file():
        pytest.skip("no demo clip in the workspace")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1800})
        page.goto(f"{server}/video")
        settle(page)
        no_exception(page, "video page")
        upload(page, clip)
        page.get_by_test_id("stFileUploader").get_by_text("demo_clip.mp4").first.wait_for(timeout=30_000)
        settle(page)
        every = page.get_by_label("Segment every N-th frame")
        every.fill("5")
        every.press("Enter")
        settle(page)
        page.get_by_text("640×480").first.wait_for(timeout=30_000)
        page.get_by_text("Fast: 1 diffusion pass per frame").first.click()  # --passes fast: the job takes seconds
        settle(page)
        assert page.get_by_test_id("stFileUploader").get_by_text("demo_clip.mp4").first.is_visible()
        page.get_by_role("button", name="Segment the clip").click()
        # progress: the bar's text while the job runs (model loading first, then frames and frames/s)
        page.get_by_test_id("stProgress").first.wait_for(timeout=60_000)
        assert page.get_by_text("frames").first.is_visible() or page.get_by_text("starting").first.is_visible()
        page.screenshot(path=str(ARTIFACTS / "video_progress.png"), full_page=True)
        page.get_by_text("Timeline").first.wait_for(timeout=600_000)
        settle(page)
        no_exception(page, "video result")
        assert page.get_by_text("mIoU vs labels").first.is_visible()  # the uploaded bytes are the demo clip's
        assert page.get_by_test_id("stFileUploader").get_by_text("demo_clip.mp4").first.is_visible()
        assert page.get_by_text("Frame 0 · 0.00 s").first.is_visible()
        # the Speed metric's help says how the run was computed: passes, members, streams × threads
        speed = page.get_by_test_id("stMetric").filter(has_text="Speed").first
        speed.get_by_test_id("stTooltipHoverTarget").first.hover()
        tip = page.get_by_test_id("stTooltipContent").first
        tip.wait_for(timeout=10_000)
        assert "UNet pass(es) per frame" in tip.inner_text() and "batch stream(s) ×" in tip.inner_text()
        page.screenshot(path=str(ARTIFACTS / "video_speed_help.png"))
        page.mouse.move(0, 0)
        # click a point of the uncertainty trace (the 4th subplot): that frame is shown
        points = page.get_by_test_id("stPlotlyChart").locator(".scatterlayer .trace .points path")
        assert points.count() >= 12
        points.nth(points.count() - 3).click(force=True)
        page.wait_for_timeout(1000)
        settle(page)
        no_exception(page, "video after click")
        heading = page.locator("h3", has_text="Frame ").first.inner_text()
        assert "Frame 0 ·" not in heading, heading
        assert page.get_by_text("uncertainty map (ensemble disagreement").first.is_visible()
        page.screenshot(path=str(ARTIFACTS / "video_result_1440.png"), full_page=True)
        page.set_viewport_size({"width": 1024, "height": 1800})
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "video_result_1024.png"), full_page=True)
        assert page.get_by_test_id("stDownloadButton").count() >= 5
        browser.close()
