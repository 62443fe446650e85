"""What the three users see, in a real headless Chromium (issue 16): 1024-wide pages without cut labels, the
clickable sweep heat map → Tune with its refit history, the report download opened offline, the clinician's
review log, and a refused second job into a busy output folder. Timings go to test-artifacts/timings.json.
"""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest

from dashboard_harness import CHROMIUM, CHROMIUM_ARGS, REPO, needs_chromium, no_exception, settle, streamlit_server

ARTIFACTS = REPO / "test-artifacts"
PAGES = ["overview", "samples", "activations", "tune", "compare", "segment", "train"]
SLOW = 240_000  # ms: the machine is shared; a page that computes features may take long

pytestmark = [needs_chromium, pytest.mark.slow]

# labels, headers, metric values and buttons must not be cut with an ellipsis or overflow their box
CUT_LABELS_JS = """() => {
  const sel = '[data-testid=stMetricLabel], [data-testid=stMetricValue], [data-testid=stWidgetLabel], ' +
              '[data-testid=stCaptionContainer], button, h1, h2, h3, [data-testid=stImageCaption]';
  const bad = [];
  for (const el of document.querySelectorAll(sel)) {
    if (!el.offsetParent) continue;
    const text = (el.innerText || '').trim();
    if (!text) continue;
    for (const node of [el, ...el.querySelectorAll('*')]) {
      const cs = getComputedStyle(node);
      if (cs.textOverflow === 'ellipsis' && node.scrollWidth > node.clientWidth + 1) { bad.push(text); break; }
    }
  }
  return bad;
}"""


@pytest.fixture(scope="module")
def server(dashboard_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    with streamlit_server(dashboard_env, tmp_path_factory.mktemp("streamlit") / "server.log") as (url, _proc):
        yield url
    from engine.app import jobs  # stop whatever the test started

    jobs_dir = Path(dashboard_env["DIFFSEG_OUT"]) / "jobs"
    for j in jobs.list_jobs(jobs_dir):
        if j["status"] == "running":
            jobs.stop_job(jobs_dir, j["id"])


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def timings() -> dict:
    out: dict = {}
    yield out
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "timings.json").write_text(json.dumps(out, indent=1))


def nav(page, name: str) -> None:  # noqa: ANN001
    """Switch page through the sidebar (same session, like a user)."""
    page.get_by_test_id("stSidebarNav").get_by_text(name.capitalize(), exact=True).click()
    page.wait_for_timeout(800)
    settle(page, SLOW)


def test_pages_at_1024_have_no_cut_labels(server: str, browser, timings: dict) -> None:  # noqa: ANN001
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1024, "height": 768})
    t0 = time.time()
    page.goto(server)
    settle(page, SLOW)
    timings["cold_load_overview_s"] = round(time.time() - t0, 1)
    switches = {}
    for name in PAGES:
        if name != "overview":
            t = time.time()
            nav(page, name)
            switches[name] = round(time.time() - t, 1)
        no_exception(page, name)
        cut = page.evaluate(CUT_LABELS_JS)
        page.screenshot(path=str(ARTIFACTS / f"w1024_{name}.png"))
        assert cut == [], f"{name}: cut labels at 1024 px: {cut}"
    timings["page_switch_s"] = switches
    timings["compare_open_s"] = switches["compare"]
    page.close()


def test_heat_map_click_opens_the_cell_in_tune_with_a_refit_history(server: str, browser, timings: dict) -> None:  # noqa: ANN001
    page = browser.new_page(viewport={"width": 1440, "height": 1800})
    page.goto(f"{server}/tune")
    settle(page, SLOW)
    page.get_by_text("Refit history").first.wait_for(timeout=SLOW)
    nav(page, "activations")
    sweep = json.loads((REPO / "assets" / "demo_sweep.json").read_text())
    # the invisible marker of cell (block 4, t = 150): markers are ordered block-major, then t
    idx = sweep["blocks"].index(4) * len(sweep["steps"]) + sweep["steps"].index(150)
    chart = page.get_by_test_id("stPlotlyChart").last
    chart.scroll_into_view_if_needed()
    point = chart.locator(".scatterlayer .point").nth(idx)
    box = point.bounding_box()
    assert box, "cell markers are drawn"
    t = time.time()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.get_by_test_id("selected-cell").filter(has_text="block 4 at t = 150").wait_for(timeout=SLOW)
    settle(page, SLOW)
    timings["heat_map_click_to_selection_s"] = round(time.time() - t, 1)
    no_exception(page, "activations after a click")
    page.screenshot(path=str(ARTIFACTS / "activations_cell_clicked.png"), full_page=True)
    page.get_by_role("button", name="Open block 4, t=150 in Tune").click()
    t = time.time()
    page.get_by_text("t=[150], blocks=[4]").first.wait_for(timeout=SLOW)
    settle(page, SLOW)
    timings["open_in_tune_to_preview_s"] = round(time.time() - t, 1)
    no_exception(page, "tune after open in tune")
    table = page.get_by_test_id("stDataFrame").first
    table.wait_for(timeout=SLOW)
    hist = page.evaluate("() => document.body.innerText")
    assert "The sweep's heat map shows" in hist  # the same cell's sweep number beside the preview
    page.screenshot(path=str(ARTIFACTS / "tune_history.png"), full_page=True)
    # a recipe change answers without a button: add block 5 through the multiselect (timed by
    # bench/tune_preview_browser.py, not here); the preview says what it is and what it was scored on
    blocks = page.get_by_test_id("stMultiSelect").nth(1)
    blocks.locator("input").first.click()
    page.get_by_role("option", name="5", exact=True).click()
    page.keyboard.press("Escape")
    page.get_by_text("t=[150], blocks=[4, 5] · preview").first.wait_for(timeout=SLOW)
    settle(page, SLOW)
    no_exception(page, "tune after a recipe change")
    text = page.evaluate("() => document.body.innerText")
    assert "4-fold cross-validation over 20 train frames" in text and "labelled pixels from 20 train frames" in text
    page.screenshot(path=str(ARTIFACTS / "tune_recipe_changed.png"), full_page=True)
    history = json.loads(page.evaluate("""() => JSON.stringify(
        [...document.querySelectorAll('[data-testid=stDataFrame]')].length)"""))
    assert history >= 2  # history + scored frames
    page.close()


def test_report_download_opens_offline_with_every_section(server: str, browser, tmp_path: Path) -> None:  # noqa: ANN001
    from engine.outputs.report import SECTION_IDS

    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    page = ctx.new_page()
    page.goto(server)
    settle(page, SLOW)
    with page.expect_download(timeout=SLOW) as dl:
        page.get_by_role("button", name="Download report (HTML)").click()
    path = tmp_path / "report.html"
    dl.value.save_as(path)
    ctx.close()
    offline = browser.new_context(viewport={"width": 1200, "height": 900}, offline=True)
    view = offline.new_page()
    view.goto(path.as_uri())
    for sid in SECTION_IDS:
        assert view.locator(f"section#{sid}").is_visible(), sid
    view.locator("section#sweep .plotly-graph-div .main-svg").first.wait_for(timeout=30_000)  # plotly ran offline
    assert view.locator("section#examples img").first.evaluate("i => i.naturalWidth") > 200
    assert "ddpm wins" in view.locator("section#summary").inner_text()
    view.screenshot(path=str(ARTIFACTS / "report_offline.png"), full_page=True)
    offline.close()


def test_review_log_records_a_decision_and_downloads(server: str, browser, dashboard_env: dict[str, str]) -> None:  # noqa: ANN001
    ctx = browser.new_context(viewport={"width": 1440, "height": 2000}, accept_downloads=True)
    page = ctx.new_page()
    page.goto(f"{server}/segment")
    settle(page, SLOW)
    for nth in (1, 2):  # a second example picked later becomes the frame shown (not the first one)
        page.get_by_test_id("stSelectbox").filter(has_text="bundled example").click()
        option = page.get_by_role("option").nth(nth)
        example = option.inner_text().strip()
        option.click()
        settle(page, SLOW)
        page.get_by_text("prediction overlay").first.wait_for(timeout=SLOW)
    assert example in page.get_by_test_id("stImageCaption").first.inner_text()  # the picked example is shown
    page.get_by_text("needs correction").first.click()
    page.get_by_placeholder("what is wrong, what to fix").fill("iris edge too wide")
    page.get_by_role("button", name="Save review").click()
    settle(page, SLOW)
    no_exception(page, "segment after a review")
    with page.expect_download(timeout=60_000) as dl:
        page.get_by_role("button", name="Review log (CSV)").click()
    rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    assert [(r["frame"], r["decision"], r["note"]) for r in rows] == [(example, "needs correction", "iris edge too wide")]
    on_disk = Path(dashboard_env["DIFFSEG_OUT"]) / "review" / "review_log.csv"
    assert on_disk.read_text() == Path(dl.value.path()).read_text()
    page.screenshot(path=str(ARTIFACTS / "segment_review.png"), full_page=True)
    ctx.close()


def test_second_job_into_a_busy_output_is_refused(server: str, browser, dashboard_env: dict[str, str]) -> None:  # noqa: ANN001
    from engine.app import jobs

    jobs_dir = Path(dashboard_env["DIFFSEG_OUT"]) / "jobs"
    before = len(jobs.list_jobs(jobs_dir))
    page = browser.new_page(viewport={"width": 1440, "height": 1600})
    page.goto(f"{server}/train")
    settle(page, SLOW)
    out = str(Path(dashboard_env["DIFFSEG_OUT"]) / "runs" / "busy-run")
    field = page.get_by_label("Run directory (output)")
    field.fill(out)
    field.press("Enter")
    steps = page.get_by_label("Max steps")
    steps.fill("100000")
    steps.press("Enter")  # Enter commits the value; it must not start a job
    settle(page, SLOW)
    assert len(jobs.list_jobs(jobs_dir)) == before
    page.get_by_role("button", name="Start pretrain").click()
    page.get_by_text("Started pretrain job").first.wait_for(timeout=SLOW)
    page.get_by_label("Run directory (output)").fill(out)  # the same folder again, as a double submit would
    page.get_by_label("Run directory (output)").press("Enter")
    settle(page, SLOW)
    page.get_by_role("button", name="Start pretrain").click()
    refusal = page.get_by_text("refused: pretrain job would write to").first
    refusal.wait_for(timeout=SLOW)
    assert "which running pretrain job" in refusal.inner_text()
    assert len(jobs.list_jobs(jobs_dir)) == before + 1
    page.screenshot(path=str(ARTIFACTS / "train_refused.png"), full_page=True)
    for j in jobs.list_jobs(jobs_dir):
        if j["status"] == "running":
            jobs.stop_job(jobs_dir, j["id"])
    page.close()
