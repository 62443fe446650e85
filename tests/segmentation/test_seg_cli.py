"""CLI: fit / evaluate / segment / sweep / pca end to end on the tiny run, plus the error paths."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import run_engine

from engine.segmentation.classifier import load_classifier
from engine.models.checkpoint import CheckpointError

FIT = ["--steps", "50,150", "--blocks", "1,3", "--members", "2", "--epochs", "1"]


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fitted(tiny_run_dir: Path, synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two fits with the same checkpoint and cache dir; the second must be served from the cache."""
    tmp = tmp_path_factory.mktemp("cli")
    out = {"clf": tmp / "clf", "cache": tmp / "cache", "tmp": tmp}
    for name in ("first", "second"):
        res = run_engine("fit", "--run", tiny_run_dir, "--data", synth_data, "--out", out["clf"],
                         "--cache-dir", out["cache"], *FIT)
        assert res.returncode == 0, res.stderr[-2000:]
        out[name] = _last_json(res.stdout)
    return out


def test_second_fit_is_served_from_the_cache(fitted) -> None:
    first, second = fitted["first"]["cache"], fitted["second"]["cache"]
    assert first["misses"] == 4 * 4 and first["hits"] == 0  # 4 train frames × (2 t × 2 blocks)
    assert second["hits"] == first["misses"] and second["misses"] == 0
    assert fitted["second"]["feature_dim"] == 2 * (64 + 32)


def test_evaluate_writes_the_metrics_json(fitted, synth_data: Path) -> None:
    js = fitted["tmp"] / "m.json"
    res = run_engine("evaluate", "--classifier", fitted["clf"], "--data", synth_data, "--json", js,
                     "--cache-dir", fitted["cache"])
    assert res.returncode == 0, res.stderr[-2000:]
    m = json.loads(js.read_text())
    for key in ("miou", "per_class_iou", "dice", "pixel_accuracy", "confusion", "train_seconds",
                "infer_seconds_per_image"):
        assert key in m, key
    names = [c["name"] for c in json.loads((synth_data / "classes.json").read_text())["classes"]]
    assert list(m["per_class_iou"]) == names and len(m["confusion"]) == len(names)
    assert 0 <= m["miou"] <= 1 and 0 <= m["pixel_accuracy"] <= 1 and m["n_images"] == 3
    assert np.array(m["confusion"]).sum() > 0 and m["train_seconds"] > 0


def test_segment_any_format_and_a_bad_file(fitted, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tif, rgba, jpg, bad = tmp_path / "gray16.tif", tmp_path / "rgba.png", tmp_path / "big.jpg", tmp_path / "notes.txt"
    Image.fromarray(rng.integers(0, 65535, (50, 70), dtype=np.uint16)).save(tif)
    Image.fromarray(rng.integers(0, 255, (45, 33, 4), dtype=np.uint8), "RGBA").save(rgba)
    Image.fromarray(rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8)).save(jpg, quality=80)
    bad.write_text("this is not an image\n")
    out = tmp_path / "seg"
    res = run_engine("segment", "--classifier", fitted["clf"], tif, bad, rgba, jpg, "--out", out, "--no-cache")
    assert res.returncode == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "notes" in errors[0], res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    n_classes = len(json.loads((fitted["clf"] / "config.json").read_text())["classes"])
    for path, (h, w) in [(tif, (50, 70)), (rgba, (45, 33)), (jpg, (1080, 1920))]:
        mask = Image.open(out / f"{path.stem}_mask.png")
        assert mask.mode == "P" and mask.size == (w, h)
        assert np.asarray(mask).max() < n_classes
        for kind in ("color", "overlay", "uncertainty"):
            im = Image.open(out / f"{path.stem}_{kind}.png")
            assert im.size == (w, h), (path, kind)
    assert not list(out.glob("notes_*"))
    lines = (out / "labelmap.txt").read_text().splitlines()
    assert any(":" in line and "," in line for line in lines)


@pytest.mark.parametrize("flags,expect", [
    (["--steps", "1000"], "0..999"),
    (["--steps", "10,-5"], "0..999"),
    (["--blocks", "1,9"], "0..3"),
])
def test_out_of_range_flags_are_argparse_errors(flags, expect, tiny_run_dir: Path, synth_data: Path,
                                                tmp_path: Path, capsys) -> None:
    from engine.cli import main

    args = ["fit", "--run", str(tiny_run_dir), "--data", str(synth_data), "--out", str(tmp_path / "c"),
            "--no-cache", "--steps", "50", "--blocks", "1"]
    with pytest.raises(SystemExit) as exc:
        main(args + flags)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert expect in err and "usage:" in err
    assert not (tmp_path / "c").exists()


def test_sweep_writes_grid_json_and_html(tiny_run_dir: Path, synth_data: Path, tmp_path: Path) -> None:
    js = tmp_path / "sweep.json"
    res = run_engine("sweep", "--run", tiny_run_dir, "--data", synth_data, "--steps", "50,250", "--blocks", "1,3",
                     "--json", js, "--members", "2", "--epochs", "1", "--no-cache")
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(js.read_text())
    assert r["steps"] == [50, 250] and r["blocks"] == [1, 3]
    grid = np.array(r["miou"], dtype=float)
    assert grid.shape == (2, 2) and np.isfinite(grid).all() and ((grid >= 0) & (grid <= 1)).all()
    assert r["best"]["miou"] == pytest.approx(grid.max())
    page = js.with_suffix(".html").read_text()
    assert "plotly" in page.lower() and "newPlot" in page
    assert not re.search(r"<script[^>]+src=", page), "the sweep page must not load scripts from the network"


def test_pca_writes_png(tiny_run_dir: Path, synth_data: Path, tmp_path: Path) -> None:
    png = tmp_path / "pca.png"
    res = run_engine("pca", "--run", tiny_run_dir, "--data", synth_data, "--step", "50", "--block", "1",
                     "--n", "2", "--out", png, "--no-cache")
    assert res.returncode == 0, res.stderr[-2000:]
    im = Image.open(png)
    assert im.size[0] >= 2 * 32 and im.size[1] >= 3 * 32
    assert len(_last_json(res.stdout)["explained_variance_ratio"]) == 3


def test_classifier_on_another_checkpoint_is_refused(fitted, other_run_dir: Path) -> None:
    from engine.models.run import load_run

    with pytest.raises(CheckpointError, match="different checkpoint"):
        load_classifier(fitted["clf"], "cpu", run=load_run(other_run_dir, "cpu"), use_cache=False)
    clf = load_classifier(fitted["clf"], "cpu", use_cache=False)  # its own run, found through the relative path
    assert clf.model.members == 2


def test_classifier_dir_without_weights(fitted, tmp_path: Path) -> None:
    broken = tmp_path / "clf"
    shutil.copytree(fitted["clf"], broken)
    (broken / "weights.pt").unlink()
    with pytest.raises(CheckpointError, match="missing weights.pt"):
        load_classifier(broken, "cpu", use_cache=False)
    res = run_engine("segment", "--classifier", broken, "x.png", "--out", tmp_path / "o")
    assert res.returncode == 2 and "missing weights.pt" in res.stderr and "Traceback" not in res.stderr
