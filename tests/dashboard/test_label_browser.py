"""The Label page in a real Chromium: pick class "instrument" by its key, paint a stroke across the first suggested
frame with the mouse, undo / redo, save, and check the mask on disk (the class id along the stroke, the
classifier's prediction elsewhere, full resolution); then a refit job runs and its before → after figures show.

Workspace: the shipped demo run and classifier, and a tiny copy of the demo data (4 train, 6 unlabelled,
6 test frames) so suggestions and the refit take seconds. Screenshots at 1440 and 1024 px go to test-artifacts/.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from dashboard_harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    needs_chromium,
    no_exception,
    settle,
    streamlit_server,
)
from PIL import Image

ARTIFACTS = REPO / "test-artifacts"
pytestmark = [needs_chromium, pytest.mark.slow]


def make_label_workspace(root: Path) -> Path:
    """assets/demo_run + demo_classifier with a small labelling copy of demo_data."""
    src = REPO / "assets"
    root.mkdir(parents=True)
    (root / "demo_run").symlink_to(src / "demo_run")
    shutil.copytree(src / "demo_classifier", root / "demo_classifier")
    data = root / "demo_data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    shutil.copy(src / "demo_data" / "classes.json", data)
    stems = sorted(p.stem for p in (src / "demo_data" / "masks").iterdir())
    # unlabelled frames the demo classifier never saw (it was fitted on the first 20)
    train, unlabelled, test = stems[:4], stems[30:36], stems[20:26]
    for s in train + unlabelled + test:
        shutil.copy(src / "demo_data" / "images" / f"{s}.png", data / "images")
    for s in train + test:
        shutil.copy(src / "demo_data" / "masks" / f"{s}.png", data / "masks")
    (data / "split.json").write_text(json.dumps({"train": train, "test": test}))
    return root


def _caption(page) -> str:
    return page.get_by_text(" px · ").first.inner_text()


def _wait_caption(page, text: str, seconds: int = 30) -> None:
    """The canvas sends its drawing asynchronously (then the app reruns): poll the frame caption."""
    for _ in range(seconds):
        settle(page)
        if text in _caption(page):
            return
        page.wait_for_timeout(1000)
    raise AssertionError(f"{text!r} not in {_caption(page)!r}")


def _press(page, key: str, expect: str) -> None:  # noqa: ANN001
    """Press a shortcut key until the caption shows its effect (a key pressed while the app reruns after
    the previous one can be lost; choosing a class twice is harmless)."""
    for _ in range(3):
        page.keyboard.press(key)
        try:
            _wait_caption(page, expect, seconds=8)
            return
        except AssertionError:
            page.get_by_text("Why this frame").first.click()
    _wait_caption(page, expect, seconds=1)


def test_label_page_paint_undo_save_refit(tmp_path: Path) -> None:
    if not (REPO / "assets" / "demo_classifier" / "weights.pt").exists():
        pytest.skip("shipped demo classifier missing")
    sync_api = pytest.importorskip("playwright.sync_api")
    ws = make_label_workspace(tmp_path / "ws")
    env = {"DIFFSEG_WORKSPACE": str(ws), "DIFFSEG_OUT": str(tmp_path / "out"),
           "DIFFSEG_CACHE_DIR": os.environ.get("DIFFSEG_CACHE_DIR", str(tmp_path / "cache")),
           "OMP_WAIT_POLICY": "PASSIVE", "DIFFSEG_THREADS": "1", "DIFFSEG_USER": "browser-test"}
    ARTIFACTS.mkdir(exist_ok=True)
    data = ws / "demo_data"
    before = {p.name for p in (data / "masks").iterdir()}
    with streamlit_server(env, tmp_path / "server.log") as (url, _proc), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1400})
        page.goto(f"{url}/label")
        settle(page)
        no_exception(page, "label")
        page.get_by_text("Why this frame").first.wait_for(timeout=120_000)
        # keyboard shortcuts pick the class: 1 = pupil, 5 = instrument
        page.get_by_text("Why this frame").first.click()  # focus the page, outside any input
        _press(page, "1", "class: pupil")
        _press(page, "5", "class: instrument")
        assert "0 edits" in _caption(page)
        stem = _caption(page).split(" · ")[0]
        # paint a horizontal stroke across the middle of the frame
        canvas = page.locator("canvas").last
        canvas.scroll_into_view_if_needed()
        page.wait_for_timeout(1000)
        box = canvas.bounding_box()
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + 0.2 * box["width"], y)
        page.mouse.down()
        for i in range(1, 31):
            page.mouse.move(box["x"] + (0.2 + 0.6 * i / 30) * box["width"], y)
        page.mouse.up()
        _wait_caption(page, "1 edit ·")
        no_exception(page, "after the stroke")
        page.screenshot(path=str(ARTIFACTS / "label_1440.png"), full_page=True)
        page.get_by_text("Why this frame").first.click()
        _press(page, "z", "0 edits")  # undo (a second press has nothing left to undo)
        assert "0 pixels changed" in _caption(page)
        page.get_by_test_id("stBaseButton-secondary").filter(has_text="Redo").click()
        _wait_caption(page, "1 edit ·")
        page.get_by_test_id("stBaseButton-primary").filter(has_text="Save label").click()
        settle(page)
        page.get_by_text("Last saved").first.wait_for(timeout=30_000)
        new = {p.name for p in (data / "masks").iterdir()} - before
        assert new == {f"{stem}.png"}

        # the mask on disk: instrument (4) along the stroke, the classifier's prediction elsewhere
        from engine.segmentation.classifier import load_classifier
        from engine.outputs.segment_outputs import segment_array
        from engine.data.folder import FolderDataset

        ds = FolderDataset(data)
        mask = np.asarray(Image.open(data / "masks" / f"{stem}.png"))
        frame = ds.image(stem)
        assert mask.shape == frame.shape[:2] and mask.dtype == np.uint8
        pred = segment_array(load_classifier(ws / "demo_classifier", "cpu", use_cache=False), frame, stem).labels
        h, w = mask.shape
        row = round(h / 2)
        assert (mask[row, round(0.25 * w):round(0.75 * w)] == 4).all()
        far = np.ones_like(mask, dtype=bool)
        far[row - 8:row + 8, :] = False
        assert np.array_equal(mask[far], pred[far])
        assert set(np.unique(mask)) <= set(range(5))
        assert stem in ds.stems("train")
        log = [json.loads(x) for x in (data / "labels_log.jsonl").read_text().splitlines()]
        assert log[-1]["stem"] == stem and log[-1]["who"] == "browser-test" and log[-1]["edits"] == {"stroke": 1}

        # refit in the background (small settings), then the before → after figures
        page.get_by_text("Refit settings").click()
        for label, value in (("Ensemble members", "2"), ("Max epochs", "2")):
            field = page.get_by_label(label)
            field.fill(value)
            field.press("Enter")
            settle(page)
        page.get_by_role("button", name="Refit classifier on the train split").click()
        page.get_by_text("Test mIoU after").first.wait_for(timeout=240_000)
        settle(page)
        no_exception(page, "after refit")
        assert (page.get_by_text("Per-class IoU on 6 test frames").count() >= 1
                or page.get_by_test_id("stPlotlyChart").count() >= 1)
        page.screenshot(path=str(ARTIFACTS / "label_refit_1440.png"), full_page=True)
        page.set_viewport_size({"width": 1024, "height": 1400})
        page.wait_for_timeout(1500)
        settle(page)
        page.screenshot(path=str(ARTIFACTS / "label_1024.png"), full_page=True)
        browser.close()
