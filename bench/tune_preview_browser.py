"""Tune's live preview in a real browser: median click-to-result when the user changes the recipe.

Starts the dashboard on the shipped workspace (tests/dashboard_harness.py: `streamlit run`, Debian Chromium via
playwright), opens Tune once (first visit: feature bank, workspace classifier), then changes the recipe through
the multiselects as a user would, --rounds times over a fixed cycle of single-cell and multi-block recipes. Each
change is timed from the click on the option to (a) the new preview's caption on screen and (b) the page settled
(script finished). A change that needs a timestep never seen by this server runs the UNet (printed apart, as
"new t"); every other change reads features from memory or the feature cache.
Usage: python bench/tune_preview_browser.py [--rounds 3] [--cache-dir DIR] [--width 1440]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

# a cycle of recipes, each one click (add or remove one timestep or block) from the one before, back to the start
CYCLE = [((20,), (7,)), ((20,), (6, 7)), ((20,), (6, 7, 8)), ((20, 50), (6, 7, 8)), ((20, 50), (5, 6, 7, 8)),
         ((20, 50), (5, 6, 7)), ((20,), (5, 6, 7)), ((20,), (6, 7))]


def selected(page, index: int) -> list[int]:  # noqa: ANN001
    """The values of the index-th multiselect (0 = timesteps, 1 = blocks)."""
    box = page.get_by_test_id("stMultiSelect").nth(index)
    return [int(v) for v in box.locator("[data-tag] span[title]").all_inner_texts()]


def click(page, index: int, what: str, value: int) -> None:  # noqa: ANN001
    """One user action on the index-th multiselect: remove a tag (its ×) or pick an option from the list."""
    box = page.get_by_test_id("stMultiSelect").nth(index)
    if what == "remove":
        box.get_by_role("button", name=f"Remove {value}", exact=True).click()
    else:
        box.locator("input").first.click()
        page.get_by_role("option", name=str(value), exact=True).click()
        page.keyboard.press("Escape")


def actions(page, steps: tuple[int, ...], blocks: tuple[int, ...]) -> list[tuple[int, str, int]]:  # noqa: ANN001
    """The clicks that turn the current selection into (steps, blocks)."""
    out = []
    for index, want in ((0, steps), (1, blocks)):
        have = selected(page, index)
        out += [(index, "add", v) for v in want if v not in have] + [(index, "remove", v) for v in have if v not in want]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache-dir", default=None, help="feature cache root (default: a fresh empty one)")
    ap.add_argument("--width", type=int, default=1440)
    ap.add_argument("--screenshots", default=None, help="folder for a screenshot after each change")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from dashboard_harness import CHROMIUM, CHROMIUM_ARGS, dashboard_environment, settle, streamlit_server

    with tempfile.TemporaryDirectory() as tmp:
        if args.cache_dir:
            os.environ["DIFFSEG_CACHE_DIR"] = args.cache_dir
        env = dashboard_environment(Path(tmp))
        with streamlit_server(env, Path(tmp) / "server.log") as (url, _proc), sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": 1400})
            t0 = time.perf_counter()
            page.goto(f"{url}/tune")
            settle(page, 300_000)
            page.get_by_text("Refit history").first.wait_for(timeout=300_000)
            print(f"load {os.getloadavg()[0]:.1f} (1-min average) on {os.cpu_count()} cores; first Tune visit "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
            first_steps = set(selected(page, 0))
            for index, what, v in actions(page, *CYCLE[-1]):  # untimed: start from the cycle's last recipe
                click(page, index, what, v)
                page.wait_for_timeout(300)
                settle(page, 300_000)
            seen_t: set[int] = first_steps | set(CYCLE[-1][0])  # the first visit extracted these
            shown, settled, new_t = [], [], []
            for r in range(args.rounds):
                for i, (steps, blocks) in enumerate(CYCLE):
                    todo = actions(page, steps, blocks)
                    assert len(todo) == 1, f"the cycle must change one thing at a time: {todo}"
                    fresh = bool(set(steps) - seen_t)
                    t = time.perf_counter()
                    click(page, *todo[0])
                    page.get_by_text(f"t={list(steps)}, blocks={list(blocks)} · preview").first.wait_for(timeout=300_000)
                    a = time.perf_counter() - t
                    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=300_000)
                    b = time.perf_counter() - t
                    seen_t |= set(steps)
                    (new_t if fresh else shown).append(a)
                    if not fresh:
                        settled.append(b)
                    print(f"round {r + 1} t={list(steps)} blocks={list(blocks)}: preview shown {a:.2f} s, page "
                          f"settled {b:.2f} s{' (new t: UNet)' if fresh else ''}", flush=True)
                    if args.screenshots:
                        Path(args.screenshots).mkdir(parents=True, exist_ok=True)
                        page.screenshot(path=str(Path(args.screenshots) / f"tune_r{r}_{i}_w{args.width}.png"),
                                        full_page=True)
                    page.wait_for_timeout(500)
            browser.close()
    if shown:
        print(f"click-to-preview median {statistics.median(shown):.2f} s (max {max(shown):.2f}, n={len(shown)}); "
              f"page settled median {statistics.median(settled):.2f} s; changes needing a new timestep: "
              + (", ".join(f"{x:.1f}" for x in new_t) + " s" if new_t else "none"))


if __name__ == "__main__":
    main()
