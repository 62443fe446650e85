"""End to end in a real headless Chromium: every page renders without an exception box; Segment upload works.

Needs Debian's `chromium` (/usr/bin/chromium, installed by .ci/run) and the Python `playwright` package;
no `playwright install`. Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
PAGES = ["overview", "samples", "activations", "tune", "compare", "segment", "train"]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed "
                                "(apt-get install -y --no-install-recommends chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(dashboard_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("streamlit") / "server.log", "w+")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true",
         "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
         "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=REPO, env={**os.environ, **dashboard_env}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            break
    else:
        proc.terminate()
        log.seek(0)
        pytest.fail(f"streamlit did not become healthy:\n{log.read()[-3000:]}")
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def page(server: str):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1800})
        yield pg
        browser.close()


def settle(page, timeout_ms: int = 90_000) -> None:  # noqa: ANN001
    """Wait until the app is connected and its script has finished running."""
    page.wait_for_selector("[data-testid=stApp][data-test-connection-state=CONNECTED]", timeout=timeout_ms)
    page.wait_for_timeout(500)
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=timeout_ms)
    # plotly charts and data grids draw asynchronously after the script finished
    charts = page.get_by_test_id("stPlotlyChart")
    for i in range(charts.count()):
        charts.nth(i).locator(".main-svg").first.wait_for(timeout=20_000)
    page.wait_for_timeout(1500)


def no_exception(page, where: str) -> None:  # noqa: ANN001
    boxes = page.get_by_test_id("stException")
    assert boxes.count() == 0, f"{where}: {boxes.first.inner_text()[:1500]}"


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
    with page.expect_file_chooser() as fc:
        page.get_by_test_id("stFileUploaderDropzone").first.click()
    fc.value.set_files(str(frame))
    page.wait_for_timeout(1000)
    settle(page)
    no_exception(page, "segment after upload")
    page.get_by_text("prediction overlay").first.wait_for(timeout=30_000)
    assert page.get_by_test_id("stImage").count() >= 3  # frame, overlay, uncertainty
    dl = page.get_by_test_id("stDownloadButton")
    assert dl.count() >= 3
    assert page.get_by_text("Mask (indexed PNG)").first.is_visible()
    page.screenshot(path=str(ARTIFACTS / "segment_uploaded.png"), full_page=True)
    assert time.time() - t0 < 170
