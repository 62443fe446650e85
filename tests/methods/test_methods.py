"""Every comparison method: tiny fit → predict → save → load round trip; conddiff's K behaviour; compare."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.segmentation.classifier import load_labelled
from engine.data.folder import FolderDataset
from engine.methods import MethodContext, get_method, load_method
from engine.methods.compare import load_pool

ALL = ["ddpm", "ddpm-mn", "unet", "mae", "swav", "gan", "datasetddpm", "conddiff"]


@pytest.fixture(scope="module")
def setup(synth_small: Path, tiny_run: Path):
    from engine.models.run import load_run

    ds = FolderDataset(synth_small)
    run = load_run(tiny_run, "cpu")
    ctx = MethodContext(ds.classes, run.image_size, "cpu", run)
    img, mask, _ = load_labelled(ds, "train", run.image_size, run.image_size)
    pool, _ = load_pool(ds, run.image_size)
    return ctx, pool, img, mask


@pytest.mark.parametrize("name", ALL)
def test_fit_predict_save_load(name: str, setup, tmp_path: Path) -> None:
    ctx, pool, img, mask = setup
    m = get_method(name, ctx, "tiny")
    stats = m.fit(pool, img, mask, tmp_path / "m")
    assert stats["train_seconds"] >= 0
    out = m.predict(img[0])
    C, S = ctx.num_classes, ctx.image_size
    assert out.probs.shape == (C, S, S)
    assert torch.allclose(out.probs.sum(0), torch.ones(S, S), atol=1e-3)
    assert out.labels.shape == (S, S)
    m.save(tmp_path / "m")
    back = load_method(tmp_path / "m", ctx)
    again = back.predict(img[0])
    assert torch.allclose(again.probs, out.probs, atol=1e-4), name


def test_conddiff_variance_shrinks_with_k(setup) -> None:
    ctx, pool, img, mask = setup
    m = get_method("conddiff", ctx, "tiny", sampling_steps=2)
    m.fit(pool, img, mask)
    one = m.predict(img[0], k=1)
    assert float(one.uncertainty["variance"].abs().max()) == 0.0 and one.extra["review"] is False
    five = m.predict(img[0], k=5)
    assert float(five.uncertainty["variance"].max()) > 0
    assert set(five.uncertainty) == {"variance", "entropy"} and isinstance(five.extra["review"], bool)
    # spread of the mean-probability estimate over seeds: K = 5 averages noise away
    spread = {k: torch.stack([m.predict(img[0], k=k, seed=s).probs for s in range(4)]).var(0).mean().item()
              for k in (1, 5)}
    assert spread[5] < spread[1]


@pytest.mark.slow
@pytest.mark.timeout(900)  # two compare runs (the second from the cache), each with the uncertainty scorecard
def test_compare_cli_all_methods(synth_small: Path, tiny_run: Path, tmp_path: Path) -> None:
    import subprocess

    from helpers import PYTHON, REPO, subprocess_env

    out = tmp_path / "cmp.json"
    cmd = [PYTHON, "-m", "engine", "compare", "--data", str(synth_small), "--run", str(tiny_run), "--methods",
           "ddpm,unet,mae,swav,datasetddpm,conddiff", "--budget", "tiny", "--k-study", "1,2", "--k-study-frames", "1",
           "--k-study-seeds", "2", "--json", str(out), "--work", str(tmp_path / "w")]
    r = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(out.read_text())
    assert set(rep["methods"]) == {"ddpm", "unet", "mae", "swav", "datasetddpm", "conddiff"}
    for res in rep["methods"].values():
        for key in ("miou", "per_class_iou", "dice", "pixel_accuracy", "confusion", "train_seconds",
                    "infer_seconds_per_image"):
            assert key in res
    assert {"n_flagged", "miou_flagged", "miou_unflagged"} <= set(rep["methods"]["conddiff"]["review"])
    assert set(rep["methods"]["conddiff"]["k_study"]) >= {"1", "2"}
    for name, res in rep["methods"].items():  # the uncertainty scorecard hook
        card = res["uncertainty_scorecard"]
        assert 0 <= card["ece"] <= 1 and card["review"]["percent_flagged_typical"] == 10.0, name
        assert (card["temperature"] is not None) == (name == "ddpm"), name
    assert "Uncertainty scorecard" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".md").read_text().count("|") > 10 and out.with_suffix(".png").stat().st_size > 100
    r2 = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0 and all(m["cached"] for m in json.loads(out.read_text())["methods"].values())


def test_conddiff_segments_an_upload_of_any_size(setup, tmp_path: Path) -> None:
    """The Segment page's conditional-diffusion path: standalone load, odd-sized bytes in, input-size maps out."""
    import io

    import numpy as np
    from PIL import Image

    from engine.data.images import ImageError
    from engine.methods.base import load_standalone
    from engine.app.segment_session import segment_frame_conddiff

    ctx, pool, img, mask = setup
    m = get_method("conddiff", ctx, "tiny", sampling_steps=2)
    m.fit(pool, img, mask)
    m.save(tmp_path / "cd")
    back = load_standalone(tmp_path / "cd", "cpu")
    assert back.ctx.classes.names == ctx.classes.names and back.ctx.image_size == ctx.image_size
    rgb = (np.random.default_rng(0).random((45, 70, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    res = segment_frame_conddiff(back, buf.getvalue(), "odd.png", k=3)
    assert res.labels.shape == res.variance.shape == res.entropy.shape == (45, 70)
    assert res.labels.dtype == np.uint8 and int(res.labels.max()) < ctx.num_classes
    assert res.samples == 3 and res.variance.min() >= 0 and isinstance(res.review, bool)
    again = segment_frame_conddiff(back, buf.getvalue(), "odd.png", k=3)
    assert np.array_equal(again.labels, res.labels)  # seeded
    with pytest.raises(ImageError, match="junk.png"):
        segment_frame_conddiff(back, b"not an image", "junk.png", k=3)
    with pytest.raises(ValueError, match="k must be"):
        segment_frame_conddiff(back, buf.getvalue(), "odd.png", k=0)


def test_compare_cache_ignores_inference_only_settings(synth_small: Path, tiny_run: Path, tmp_path: Path) -> None:
    """Changing conddiff's review threshold or K reuses the fitted weights and applies the new values."""
    from engine.methods.compare import compare

    # no scorecard: its calibrated review threshold would replace the config's (uncalibrated) one
    common = dict(budget="tiny", work=tmp_path / "w", k_study=(), figure_frames=1, scorecard=False, device="cpu")
    first = compare(synth_small, tiny_run, ["conddiff"], tmp_path / "a.json", **common)["methods"]["conddiff"]
    second = compare(synth_small, tiny_run, ["conddiff"], tmp_path / "b.json",
                     overrides={"conddiff": {"review_threshold": 0.0, "samples": 2}}, **common)["methods"]["conddiff"]
    assert not first["cached"] and second["cached"] and first["dir"] == second["dir"]
    assert second["review"]["threshold"] == 0.0 and second["review"]["samples"] == 2
    assert second["review"]["n_flagged"] == second["n_test"]  # every score > 0 with K = 2
    assert json.loads((Path(second["dir"]) / "method.json").read_text())["config"]["samples"] == 2
    third = compare(synth_small, tiny_run, ["conddiff"], tmp_path / "c.json",
                    overrides={"conddiff": {"lr": 1e-3}}, **common)["methods"]["conddiff"]
    assert not third["cached"] and third["dir"] != first["dir"]  # a training setting retrains


def test_compare_report_rows_dirs_and_loading(setup, tmp_path: Path) -> None:
    from engine.methods.compare_report import frame_prediction, load_methods, method_dirs, method_results, metric_rows

    ctx, pool, img, mask = setup
    m = get_method("unet", ctx, "tiny")
    m.fit(pool, img, mask)
    m.save(tmp_path / "work" / "unet-abc")
    m.save(tmp_path / "shipped" / "unet")
    report = {"methods": {"unet": {"miou": 0.5, "per_class_iou": {"a": 0.4}, "dir": str(tmp_path / "work" / "unet-abc")},
                          "mae": {"miou": 0.7, "per_class_iou": {"a": 0.6}, "dir": str(tmp_path / "gone")}},
              "budget": "tiny"}
    assert set(method_results(report)) == {"unet", "mae"} and method_results(None) == {}
    assert set(method_results(report["methods"])) == {"unet", "mae"}  # a flat report reads the same
    rows = {r["method"]: r for r in metric_rows(report)}
    assert rows["mae"]["Δ vs UNet"] == pytest.approx(0.2) and rows["unet"]["Δ vs UNet"] is None
    assert rows["mae"]["IoU a"] == 0.6
    assert method_dirs(report) == {"unet": tmp_path / "work" / "unet-abc"}  # mae's dir is gone
    assert method_dirs(report, tmp_path / "shipped") == {"unet": tmp_path / "shipped" / "unet"}
    relative = {"methods": {"unet": {**report["methods"]["unet"], "dir": "work/unet-abc"}}}
    assert method_dirs(relative, base=tmp_path) == {"unet": tmp_path / "work" / "unet-abc"}
    loaded = load_methods(method_dirs(report), ctx.classes, ctx.image_size, "cpu")
    assert set(loaded) == {"unet"}
    assert torch.equal(loaded["unet"].predict(img[0]).labels, m.predict(img[0]).labels)
    shown = frame_prediction(loaded["unet"], img[0])
    assert shown["labels"].dtype == np.uint8 and shown["variance"] is None  # the unet has no sample variance
    assert np.array_equal(shown["labels"], m.predict(img[0]).labels.numpy())
    assert load_methods(method_dirs(report), ctx.classes, ctx.image_size * 2, "cpu") == {}  # fitted at another size
