"""Every dashboard page through Streamlit's AppTest: renders, has its key widgets, reacts to a change."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]

TIMEOUT = 90


@pytest.fixture()
def app(dashboard_env: dict[str, str], app_path) -> AppTest:  # noqa: ANN001
    at = AppTest.from_file(str(app_path), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def labels(widgets) -> list[str]:  # noqa: ANN001
    return [w.label for w in widgets]


def test_overview_shows_data_run_and_workspace_selector(app: AppTest) -> None:
    assert "Workspace" in [s.value for s in app.sidebar.subheader]
    assert labels(app.sidebar.radio) == ["Source"]
    metric_labels = labels(app.metric)
    assert {"Labelled train frames", "Labelled test frames", "Pretraining pool", "Preset", "Steps trained"} <= set(metric_labels)
    assert next(m.value for m in app.metric if m.label == "Pretraining pool") == "1,000"  # from the run's config
    assert any("class-legend" in m.value for m in app.markdown)
    assert any("synthetic 64-px research demo, not for clinical use" in w.value for w in app.warning)
    assert any("ddpm wins: mIoU 0.704, +0.084 over the from-scratch UNet" in m.value for m in app.markdown)
    app.sidebar.radio[0].set_value("Directories on disk").run()
    assert any("falls back to the embedded default `demo_run`" in c.value for c in app.sidebar.caption)
    # a path outside the allowed folder is refused with a clear message and not used
    app.sidebar.text_input(key="ws_run").set_value("/nonexistent/run").run()
    assert not app.exception
    assert any("`/nonexistent/run` is outside the allowed folder" in e.value for e in app.sidebar.error)
    # an allowed directory that does not exist degrades to a friendly note, not an exception
    app.sidebar.text_input(key="ws_run").set_value("missing-run").run()
    assert not app.exception
    assert any("needs a run" in i.value for i in app.info)


def test_samples_page(app: AppTest) -> None:
    goto(app, "samples")
    assert {"Sampler", "Seed"} <= set(labels(app.selectbox) + labels(app.number_input))
    assert {"Sampling steps", "Samples"} <= set(labels(app.slider))


def test_activations_page(app: AppTest) -> None:
    goto(app, "activations")
    assert "Timestep t" in labels(app.slider)
    assert "Frame" in labels(app.selectbox)
    assert "Blocks" in labels(app.multiselect)
    assert any("block 0 is the deepest" in m.value for m in app.markdown)  # said on the page, not in a tooltip
    best = json.loads((ROOT / "assets" / "demo_sweep.json").read_text())["best"]  # the best cell by default
    assert any(f"Selected cell: block {best['block']} at t = {best['step']}" in m.value for m in app.markdown)
    app.slider(key="act_step").set_value(150).run()
    assert not app.exception
    assert any("t = 150 has them" in c.value for c in app.caption)
    app.toggle(key="act_shared").set_value(True).run()  # one PCA basis across the selected blocks
    assert not app.exception, [e.message for e in app.exception]
    captions = " ".join(img.caption for el in app.get("image") for img in el.proto.imgs)
    assert "ground truth" in captions and "(joint)" in captions
    app.session_state["act_cell"] = (4, 150)  # what a click on the heat map stores (the browser test clicks)
    app.run()
    assert any("Selected cell: block 4 at t = 150" in m.value for m in app.markdown)


def test_tune_preview_history_and_ensemble_refit(app: AppTest) -> None:
    app.switch_page("app_pages/tune.py").run(timeout=300)
    assert not app.exception, [e.message for e in app.exception]
    first = next(m.value for m in app.metric if m.label == "mIoU (preview)")
    blocks = app.multiselect(key="tune_blocks")
    assert blocks.value
    new = [b for b in blocks.options if b not in blocks.value][:1] or blocks.options[:1]
    blocks.set_value([int(new[0])]).run(timeout=300)  # the preview answers without a button
    assert not app.exception, [e.message for e in app.exception]
    second = next(m.value for m in app.metric if m.label == "mIoU (preview)")
    assert first != second
    history = app.session_state["tune_history"]
    assert [h["fit"] for h in history] == ["preview", "preview"]
    assert history[1]["Δ vs previous"] == f"{history[1]['mIoU'] - history[0]['mIoU']:+.3f}"
    app.button(key="tune_refit").click().run(timeout=600)  # the sweep-settings ensemble: ~10 s idle
    assert not app.exception, [e.message for e in app.exception]
    assert any(m.label == "mIoU (ensemble)" for m in app.metric)
    assert app.session_state["tune_history"][-1]["fit"] == "ensemble (sweep settings)"
    assert "tune_opacity" in [s.key for s in app.slider]


def test_compare_page_shows_every_method(app: AppTest) -> None:
    """The shipped report: a sortable table of all six methods, per-class chart, live masks of each method."""
    import json

    from dashboard_harness import workspace_root

    report = json.loads((workspace_root() / "demo_compare.json").read_text())
    goto(app, "compare")
    table = app.dataframe[0].value
    assert set(table["method"]) == set(report["methods"]) >= {"ddpm", "unet", "mae", "swav", "datasetddpm", "conddiff"}
    assert table["mIoU"].is_monotonic_decreasing  # sorted best first
    assert abs(float(table.set_index("method").loc["ddpm", "mIoU"]) - report["methods"]["ddpm"]["miou"]) < 1e-9
    assert "Frames" in labels(app.multiselect)
    assert table.set_index("method").loc["unet", "Δ vs UNet"] == "reference"  # never "None"
    captions = " ".join(img.caption for el in app.get("image") for img in el.proto.imgs)
    for name in report["methods"]:
        assert f"{name} · IoU" in captions, name  # a mask per method with its per-frame IoU
    assert "conddiff uncertainty" in captions
    app.multiselect(key="cmp_frames").set_value(app.multiselect(key="cmp_frames").value[:1]).run()
    assert not app.exception, [e.message for e in app.exception]


def test_segment_page_example_and_bad_upload(app: AppTest) -> None:
    goto(app, "segment")
    assert "Overlay opacity" in labels(app.slider)
    # the review slider: a share of typical frames (calibrated classifier) or a raw score (uncalibrated)
    assert {"Flag for review: about this share of typical frames",
            "Review if uncertainty score above (uncalibrated)"} & set(labels(app.slider))
    assert "Contours" in labels(app.toggle)
    ex = app.selectbox(key="seg_example")
    ex.set_value(ex.options[1]).run()
    assert not app.exception, [e.message for e in app.exception]
    assert not app.error, [e.value for e in app.error]  # a bundled frame is not called unfamiliar
    assert app.dataframe  # per-class area table
    assert app.warning or app.success  # review flag shown
    verdicts = [m.value for m in [*app.warning, *app.success, *app.info]]
    assert any("training frames" in v for v in verdicts), verdicts  # the familiarity verdict, in words
    assert any("Confident." in v or "Model unsure — please check." in v for v in verdicts), verdicts
    app.slider(key="seg_opacity").set_value(0.8).run()
    app.toggle(key="seg_contours").set_value(True).run()
    assert not app.exception
    # a file that is not an image: a clear message, the page (and the example) stays usable
    app.get("file_uploader")[0].upload("broken.png", b"this is not a png", "image/png").run()
    assert not app.exception, [e.message for e in app.exception]
    assert any("broken.png" in e.value for e in app.error), [e.value for e in app.error]
    assert app.dataframe and (app.warning or app.success)


def test_train_page(app: AppTest) -> None:
    goto(app, "train")
    assert "New job" in labels(app.radio)
    app.radio(key="train_kind").set_value("fit").run()
    assert not app.exception
    assert "Timesteps" in labels(app.text_input)


def test_train_page_runs_a_pretrain_job_in_the_background(app: AppTest, dashboard_env: dict[str, str]) -> None:
    """Start a 3-step tiny pretraining from the form: a subprocess job, listed with its log, ending 'done'."""
    import time
    from pathlib import Path

    from engine.app import jobs

    goto(app, "train")
    app.radio(key="train_kind").set_value("pretrain").run()
    app.selectbox(key="job_preset").set_value("tiny")
    app.number_input(key="job_steps").set_value(3)
    run_dir = Path(dashboard_env["DIFFSEG_OUT"]) / "runs" / "apptest-run"
    app.text_input(key="job_out").set_value(str(run_dir))
    next(b for b in app.button if b.label == "Start pretrain").click().run()
    assert not app.exception, [e.message for e in app.exception]
    jobs_dir = Path(dashboard_env["DIFFSEG_OUT"]) / "jobs"
    listed = jobs.list_jobs(jobs_dir)
    assert listed and listed[0]["kind"] == "pretrain" and str(run_dir) in listed[0]["argv"]
    deadline = time.time() + 180
    while jobs.get_job(jobs_dir, listed[0]["id"])["status"] in jobs.ACTIVE and time.time() < deadline:
        time.sleep(0.5)
    app.run()  # like the panel's 2 s refresh
    assert not app.exception
    assert jobs.get_job(jobs_dir, listed[0]["id"])["status"] == "done", jobs.job_log(jobs_dir, listed[0]["id"])
    assert (run_dir / "config.json").is_file() and (run_dir / "loss.jsonl").is_file()
    assert any("pretrain · done" in s.label for s in app.get("expandable")) or \
        any("pretrain · done" in str(getattr(s, "label", "")) for s in app.get("status"))


def test_segment_page_conditional_diffusion_on_request(app: AppTest) -> None:
    """With the shipped conditional-diffusion model: K samples → mean mask, variance and entropy maps, a flag."""
    goto(app, "segment")
    assert "Conditional diffusion too" in labels(app.toggle), "the embedded default ships assets/demo_conddiff"
    ex = app.selectbox(key="seg_example")
    ex.set_value(ex.options[1]).run()
    n_images = len(app.get("image"))
    app.toggle(key="seg_cd").set_value(True).run()
    app.slider(key="seg_cd_k").set_value(3).run()
    assert not app.exception, [e.message for e in app.exception]
    assert any("K = 3" in h.value for h in app.subheader)
    flags = [m.value for m in [*app.warning, *app.success] if "Conditional diffusion" in m.value]
    assert len(flags) == 1 and "agrees with the pixel classifier" in flags[0]
    # the same review semantic as the pixel classifier: a share of typical frames at this K (when calibrated)
    assert "typical frames" in flags[0] or "not calibrated" in flags[0], flags[0]
    assert len(app.get("image")) > n_images  # mean mask + variance + entropy
    results = {c.samples: c for c in app.session_state["seg_cd_results"].values()}
    assert set(results) == {5, 3}  # the default K first, then K = 3 on request
    cd = results[3]
    assert cd.labels.shape == cd.variance.shape == cd.entropy.shape


def test_public_mode_turns_off_paths_and_jobs(dashboard_env: dict[str, str], app_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("DIFFSEG_PUBLIC", "1")
    at = AppTest.from_file(str(app_path), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.sidebar.radio and not at.sidebar.text_input  # no directories on disk
    assert any("Public demo mode" in c.value for c in at.sidebar.caption)
    goto(at, "train")
    assert any("Jobs are off in public/demo mode" in i.value for i in at.info)
    assert not at.button
