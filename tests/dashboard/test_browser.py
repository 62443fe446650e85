"""End to end in a real headless Chromium: every page renders without an exception box; Segment upload works.

Needs Debian's `chromium` (/usr/bin/chromium, installed by .ci/run) and the Python `playwright` package;
no `playwright install`. Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dashboard_harness import CHROMIUM, CHROMIUM_ARGS, REPO, needs_chromium, no_exception, settle, streamlit_server, upload

ARTIFACTS = REPO / "test-artifacts"
PAGES = ["overview", "samples", "activations", "tune", "compare", "segment", "train"]

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def server(dashboard_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    with streamlit_server(dashboard_env, tmp_path_factory.mktemp("streamlit") / "server.log") as (url, _proc):
        yield url


@pytest.fixture(scope="module")
def page(server: str):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1800})
        yield pg
        browser.close()


def test_every_page_and_segment_upload(server: str, page) -> None:  # noqa: ANN001
    ARTIFACTS.mkdir(exist_ok=True)
    t0 = time.time()
    for name in PAGES:
        page.goto(f"{server}/{'' if name == 'overview' else name}")
        settle(page)
        no_exception(page, name)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        if name == "overview":
            assert page.get_by_text("Data set").first.is_visible()

    # Segment: upload a data-set frame through the dropzone's file chooser
    frame = next((Path(os.environ["DIFFSEG_WORKSPACE"]) / "demo_data" / "images").iterdir())
    page.goto(f"{server}/segment")
    settle(page)
    upload(page, frame)
    page.wait_for_timeout(1000)
    settle(page)
    no_exception(page, "segment after upload")
    page.get_by_text("prediction overlay").first.wait_for(timeout=30_000)
    assert page.get_by_test_id("stImage").count() >= 3  # frame, overlay, uncertainty
    dl = page.get_by_test_id("stDownloadButton")
    assert dl.count() >= 3
    assert page.get_by_text("Mask (indexed PNG)").first.is_visible()
    page.screenshot(path=str(ARTIFACTS / "segment_uploaded.png"), full_page=True)

    # conditional diffusion on request: K samples → mean mask, variance and entropy maps
    page.get_by_text("Conditional diffusion too").first.click()
    page.get_by_text("Conditional diffusion · K = 5").first.wait_for(timeout=60_000)
    settle(page)
    no_exception(page, "segment with conditional diffusion")
    assert page.get_by_text("variance across samples").first.is_visible()
    page.screenshot(path=str(ARTIFACTS / "segment_conddiff.png"), full_page=True)
    assert time.time() - t0 < 200
