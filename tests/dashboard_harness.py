"""Shared by the dashboard and reliability tests: the workspace environment, a `streamlit run` server on a
free loopback port, and Chromium helpers (Debian's /usr/bin/chromium through the playwright package)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import free_port

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed "
                                    "(apt-get install -y --no-install-recommends chromium)")


def workspace_root() -> Path:
    """$DIFFSEG_WORKSPACE if set, else the embedded default assets/."""
    env = os.environ.get("DIFFSEG_WORKSPACE")
    return Path(env) if env else REPO / "assets"


def dashboard_environment(tmp: Path) -> dict[str, str]:
    """Env vars for a dashboard on the test workspace with private output and cache folders (skips if incomplete)."""
    root = workspace_root()
    missing = [p for p in ("demo_run/config.json", "demo_data/classes.json", "demo_classifier/weights.pt")
               if not (root / p).exists()]
    if missing:
        pytest.skip(f"workspace {root} is incomplete (missing {', '.join(missing)})")
    return {"DIFFSEG_WORKSPACE": str(root), "DIFFSEG_OUT": str(tmp / "out"),
            "DIFFSEG_CACHE_DIR": os.environ.get("DIFFSEG_CACHE_DIR", str(tmp / "cache")),
            "OMP_WAIT_POLICY": "PASSIVE", "DIFFSEG_THREADS": "1"}


@contextlib.contextmanager
def streamlit_server(env: dict[str, str], log_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`streamlit run dashboard/app.py` on a free port until healthy; yields (url, process)."""
    port = free_port()
    with open(log_path, "w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true",
             "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
             "--server.port", str(port), "--server.address", "127.0.0.1"],
            cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 60
            while True:
                try:
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                        break
                except OSError:
                    time.sleep(0.5)
                if proc.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    pytest.fail(f"streamlit did not become healthy:\n{log.read()[-3000:]}")
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def settle(page, timeout_ms: int = 90_000) -> None:  # noqa: ANN001
    """Wait until the app is connected and its script has finished running."""
    page.wait_for_selector("[data-testid=stApp][data-test-connection-state=CONNECTED]", timeout=timeout_ms)
    page.wait_for_timeout(500)
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=timeout_ms)
    # plotly charts and data grids draw asynchronously after the script finished
    charts = page.get_by_test_id("stPlotlyChart")
    for i in range(charts.count()):
        charts.nth(i).locator(".main-svg").first.wait_for(state="attached", timeout=20_000)  # may sit in a closed expander
    page.wait_for_timeout(1500)


def no_exception(page, where: str) -> None:  # noqa: ANN001
    boxes = page.get_by_test_id("stException")
    assert boxes.count() == 0, f"{where}: {boxes.first.inner_text()[:1500]}"


def upload(page, path: Path) -> None:  # noqa: ANN001
    """Put one file into the page's first file uploader through its file chooser."""
    with page.expect_file_chooser() as fc:
        page.get_by_test_id("stFileUploaderDropzone").first.click()
    fc.value.set_files(str(path))


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
