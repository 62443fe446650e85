"""Browser: the Segment page says the gradient-and-shapes photo is unlike the training frames, before the
review verdict; the Compare page shows the uncertainty scorecard. Screenshots at 1440 and 1024 px wide."""
from __future__ import annotations

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
from uncertainty_helpers import gradient_shapes_photo

ARTIFACTS = REPO / "test-artifacts"
pytestmark = [needs_chromium, pytest.mark.skipif(not (REPO / "assets/demo_run/familiarity.json").is_file(),
                                                 reason="assets/demo_run/familiarity.json not shipped")]


def test_segment_and_compare_show_uncertainty(dashboard_env: dict[str, str], tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    photo = gradient_shapes_photo(tmp_path / "gradient_shapes.jpg")
    with streamlit_server(dashboard_env, tmp_path / "server.log") as (url, _proc), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1600})
        page.goto(f"{url}/segment")
        settle(page)
        upload(page, photo)
        page.wait_for_timeout(1000)
        settle(page)
        no_exception(page, "segment after uploading the photo")
        verdict = page.locator(".st-key-seg_familiarity")
        verdict.get_by_text("Unlike the training frames").first.wait_for(timeout=60_000)
        review = page.locator(".st-key-seg_review")
        assert review.get_by_text("Model unsure — please check").count() + review.get_by_text("Confident.").count() >= 1
        # the familiarity verdict comes first, then the review verdict, then the masks
        y_fam, y_rev = verdict.bounding_box()["y"], review.bounding_box()["y"]
        y_img = page.get_by_text("prediction overlay").first.bounding_box()["y"]
        assert y_fam < y_rev < y_img
        assert page.get_by_text("Flag for review: about this share of typical frames").first.is_visible()
        page.screenshot(path=str(ARTIFACTS / "segment_unfamiliar_1440.png"), full_page=True)
        page.set_viewport_size({"width": 1024, "height": 1600})
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / "segment_unfamiliar_1024.png"), full_page=True)

        page.set_viewport_size({"width": 1440, "height": 1800})
        page.goto(f"{url}/compare")
        settle(page)
        no_exception(page, "compare")
        card = page.locator(".st-key-cmp_scorecard")
        card.get_by_text("Uncertainty scorecard").first.wait_for(timeout=30_000)
        if card.get_by_test_id("stDataFrame").count():
            assert card.get_by_test_id("stPlotlyChart").count() == 2  # reliability diagram + risk–coverage
        card.screenshot(path=str(ARTIFACTS / "compare_scorecard_1440.png"))
        page.set_viewport_size({"width": 1024, "height": 1800})
        page.wait_for_timeout(800)
        card.screenshot(path=str(ARTIFACTS / "compare_scorecard_1024.png"))
        browser.close()
