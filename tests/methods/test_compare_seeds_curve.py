"""`compare --seeds` (mean ± sd, intervals, paired tests vs ddpm) and `compare --label-counts` at the tiny budget."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.methods.label_curve import label_subsets


def test_compare_seeds_intervals_and_paired_tests(synth_small: Path, tiny_run: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cmp.json"
    args = ["compare", "--data", str(synth_small), "--run", str(tiny_run), "--methods", "ddpm,unet", "--budget",
            "tiny", "--seeds", "0,1,2", "--k-study", "", "--json", str(out), "--work", str(tmp_path / "w")]
    assert main(args) == 0
    rep = json.loads(out.read_text())
    assert rep["seeds"] == [0, 1, 2]
    for name in ("ddpm", "unet"):
        r = rep["methods"][name]
        s = r["seeds"]
        assert s["seeds"] == [0, 1, 2] and len(s["miou_per_seed"]) == 3
        assert s["mean"] == pytest.approx(np.mean(s["miou_per_seed"]))
        assert s["sd"] == pytest.approx(np.std(s["miou_per_seed"], ddof=1))
        assert r["miou"] == s["miou_per_seed"][0]  # the table row is the first seed
        ci = r["miou_ci95"]
        assert ci["lo"] <= r["miou"] <= ci["hi"] and ci["n_frames"] == rep["n_test"]
    assert r["config"]["seed"] == 0
    p = rep["paired_vs_ddpm"]
    assert set(p) == {"unet"} and 0 < p["unet"]["p_value"] <= 1 and p["unet"]["lo"] <= p["unet"]["hi"]
    md = out.with_suffix(".md").read_text()
    assert "95 % bootstrap interval" in md and "Δ vs ddpm" in md and "± " in md
    dirs = {Path(d.name).name.split("-")[0] for d in (tmp_path / "w").iterdir()}
    assert dirs == {"ddpm", "unet"} and len(list((tmp_path / "w").iterdir())) == 6  # 2 methods × 3 seeds cached


def test_label_subsets_are_seeded_and_full_count_has_one_draw() -> None:
    a = label_subsets(20, 5, 3, seed=0)
    assert len(a) == 3 and all(len(s) == 5 and len(set(s)) == 5 and max(s) < 20 for s in a)
    assert a == label_subsets(20, 5, 3, seed=0) and a != label_subsets(20, 5, 3, seed=1)
    assert label_subsets(20, 20, 3) == [list(range(20))]
    with pytest.raises(ValueError, match="outside"):
        label_subsets(3, 4, 1)


def test_compare_label_counts_curve(synth_small: Path, tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "curve.json"
    assert main(["compare", "--data", str(synth_small), "--run", str(tiny_run), "--methods", "ddpm,unet",
                 "--budget", "tiny", "--label-counts", "1,3,50", "--label-draws", "2", "--seeds", "0,1",
                 "--json", str(out), "--work", str(tmp_path / "w"), "--cache-dir", str(tmp_path / "fc")]) == 0
    rep = json.loads(out.read_text())
    assert rep["counts"] == [1, 3] and rep["skipped_counts"] == [50]
    for name in ("ddpm", "unet"):
        one, full = rep["curves"][name]["1"], rep["curves"][name]["3"]
        assert one["n_runs"] == 4 and full["n_runs"] == 2  # draws × seeds; all frames → one draw
        assert all(len(r["frames"]) == 1 for r in one["runs"]) and all(len(r["frames"]) == 3 for r in full["runs"])
        assert one["mean"] == pytest.approx(np.mean([r["miou"] for r in one["runs"]]))
    assert "n = 1" in out.with_suffix(".md").read_text()
    from PIL import Image

    assert Image.open(out.with_suffix(".png")).size == (720, 440)


def test_curve_table_and_figure_accept_a_method_run_at_fewer_counts() -> None:
    from engine.methods.label_curve import curve_figure, curve_markdown

    point = {"mean": 0.6, "sd": 0.01, "n_runs": 2, "runs": []}
    report = {"counts": [1, 5, 20], "n_test": 10, "image_size": 64, "budget": "quick", "seeds": [0], "draws": 1,
              "curves": {"ddpm": {"1": point, "5": point, "20": point}, "conddiff": {"1": point, "20": point}}}
    table = curve_markdown(report)
    assert "| conddiff | 0.600 ± 0.010 (2) | – | 0.600 ± 0.010 (2) |" in table
    assert curve_figure(report).shape == (440, 720, 3)


def test_merge_curves_joins_a_method_run_later_and_refuses_another_setup() -> None:
    from engine.errors import ConfigError
    from engine.methods.label_curve import curve_markdown, merge_curves

    point = {"mean": 0.6, "sd": 0.01, "n_runs": 4, "runs": []}
    setup = {"kind": "label_curve", "data": "d", "run": "r", "image_size": 64, "budget": "quick", "n_test": 10,
             "pool_source": "p", "draw_seed": 0}
    base = {**setup, "counts": [1, 2, 5], "seeds": [0, 1], "draws": 2, "methods": ["ddpm"],
            "curves": {"ddpm": {"1": point, "2": point, "5": point}}}
    added = {**setup, "counts": [1, 20], "seeds": [0], "draws": 1, "methods": ["conddiff"], "seconds": 1800,
             "curves": {"conddiff": {"1": {**point, "n_runs": 1}, "20": {**point, "n_runs": 1}}}}
    merged = merge_curves(base, added)
    assert merged["counts"] == [1, 2, 5, 20] and merged["methods"] == ["ddpm", "conddiff"]
    assert merged["runs_per_method"]["conddiff"] == {"counts": [1, 20], "seeds": [0], "draws": 1, "seconds": 1800}
    table = curve_markdown(merged)
    assert "| ddpm | 0.600 ± 0.010 (4) | 0.600 ± 0.010 (4) | 0.600 ± 0.010 (4) | – |" in table
    assert "conddiff: counts [1, 20], seeds [0] × 1 label draw(s), 30 min (joined with --add-to)." in table
    with pytest.raises(ConfigError, match=r"--add-to: the curves were made on a different setup \(budget\)"):
        merge_curves(base, {**added, "budget": "tiny"})


def test_add_to_needs_a_curve_report_before_any_training(tmp_path: Path) -> None:
    from helpers import run_engine

    other = tmp_path / "cmp.json"
    other.write_text('{"methods": {}}')
    res = run_engine("compare", "--data", tmp_path, "--methods", "unet", "--label-counts", "1", "--add-to", other,
                     "--json", tmp_path / "c.json")
    assert res.returncode == 2
    assert f"--add-to {other}: not a label-count curve report (kind label_curve)" in res.stderr
    res = run_engine("compare", "--data", tmp_path, "--methods", "unet", "--add-to", other, "--json", tmp_path / "c.json")
    assert res.returncode == 2 and "--add-to joins label-count curves: give --label-counts too" in res.stderr
