"""k-center greedy against a brute-force reference; `suggest` and `refit` from the command line."""
from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import numpy as np
from helpers import run_engine

from engine.labelling.selection import k_center_greedy, top_uncertain


def _naive_k_center(x: np.ndarray, lab: np.ndarray, n: int) -> list[int]:
    chosen: list[int] = []
    for _ in range(n):
        best, best_d = -1, -1.0
        for i in range(len(x)):
            if i in chosen:
                continue
            centres = [*lab, *(x[j] for j in chosen)]
            d = min(float(np.linalg.norm(x[i] - c)) for c in centres)
            if d > best_d:
                best, best_d = i, d
        chosen.append(best)
    return chosen


def test_k_center_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for seed, n in product(range(5), (1, 4, 9)):
        x = np.random.default_rng(seed).normal(size=(30, 6))
        lab = rng.normal(size=(3, 6))
        assert [p.index for p in k_center_greedy(x, lab, n)] == _naive_k_center(x, lab, n)


def test_k_center_from_nothing_and_exclusions() -> None:
    x = np.array([[0.0, 0], [1, 0], [10, 0], [10.1, 0], [-9, 0]])
    picks = k_center_greedy(x, np.zeros((0, 2)), 3)
    assert picks[0].index == 1 and not np.isfinite(picks[0].distance)  # closest to the mean (2.42, 0)
    assert [p.index for p in picks[1:]] == [4, 3]  # -9 is 10 from frame 1, 10.1 is 9.1
    ex = np.array([False, False, False, True, False])
    assert 3 not in [p.index for p in k_center_greedy(x, np.zeros((0, 2)), 4, exclude=ex)]


def test_uncertainty_weighting_prefers_uncertain_but_not_duplicates() -> None:
    x = np.array([[0.0, 0], [5, 0], [5.01, 0], [0, 5]])
    u = np.array([0.0, 0.9, 0.8, 0.5])
    picks = k_center_greedy(x, np.array([[0.0, 0.1]]), 2, uncertainty=u)
    assert [p.index for p in picks] == [1, 3]  # the near-copy of frame 1 (index 2) is skipped
    assert top_uncertain(u, 2) == [1, 2]


def test_suggest_and_refit_cli(loop_run_dir: Path, loop_data: Path, tmp_path: Path) -> None:
    env = {"DIFFSEG_CACHE_DIR": str(tmp_path / "cache")}
    r = run_engine("suggest", "--run", str(loop_run_dir), "--data", str(loop_data), "--n", "3",
                   "--json", str(tmp_path / "s.json"), **env)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "s.json").read_text())
    split = json.loads((loop_data / "split.json").read_text())
    stems = [s["stem"] for s in rep["suggestions"]]
    assert len(set(stems)) == 3 and not set(stems) & set(split["train"] + split["test"])
    assert rep["n_candidates"] == 6 and rep["n_labelled"] == 3 and rep["strategy"].startswith("diversity")
    assert all(s["reason"] for s in rep["suggestions"])
    # a classifier on this run: fit, then suggest with uncertainty, then refit after a new label
    clf = tmp_path / "clf"
    r = run_engine("fit", "--run", str(loop_run_dir), "--data", str(loop_data), "--steps", "5", "--blocks", "1,2",
                   "--out", str(clf), "--members", "2", "--epochs", "1", **env)
    assert r.returncode == 0, r.stderr
    r = run_engine("suggest", "--run", str(loop_run_dir), "--data", str(loop_data), "--classifier", str(clf),
                   "--n", "2", **env)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["strategy"] == "uncertainty+diversity" and all(s["uncertainty"] is not None for s in rep["suggestions"])
    from engine.data.folder import FolderDataset
    from engine.labelling.label_store import save_label

    ds = FolderDataset(loop_data)
    save_label(loop_data, rep["suggestions"][0]["stem"], np.full(ds.image(stems[0]).shape[:2], 3, np.uint8))
    r = run_engine("refit", "--data", str(loop_data), "--classifier", str(clf), "--out", str(tmp_path / "clf2"), **env)
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "clf2" / "refit.json").read_text())
    assert out["n_train_before"] == 3 and out["n_train_after"] == 4
    assert out["train_stems_added"] == [rep["suggestions"][0]["stem"]]
    assert 0 <= out["before"]["miou"] <= 1 and 0 <= out["after"]["miou"] <= 1 and out["after"]["n_images"] == 3


def test_unfamiliar_frames_are_excluded(loop_run_dir: Path, loop_data: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """With a familiarity model that flags one candidate, suggest never picks it and says so."""
    from engine.labelling import suggest as sg
    from engine.data.folder import FolderDataset
    from engine.segmentation.features import FeatureSpec
    from engine.models.run import load_run

    run = load_run(loop_run_dir, "cpu")
    ds = FolderDataset(loop_data)
    cands, _ = sg.candidates_and_labelled(ds)
    base = sg.suggest(run, ds, len(cands), FeatureSpec((5,), (1,)))
    assert base["unfamiliar_filter"] is False and "familiarity.json" in base["unfamiliar_filter_note"]
    assert len(base["suggestions"]) == len(cands)
    flagged = base["suggestions"][0]["stem"]
    monkeypatch.setattr(sg, "_unfamiliar_flags", lambda r, imgs: (np.array([c == flagged for c in cands]), ""))
    rep = sg.suggest(run, ds, len(cands), FeatureSpec((5,), (1,)))
    assert rep["unfamiliar_excluded"] == [flagged] and rep["n_unfamiliar_excluded"] == 1
    assert flagged not in [s["stem"] for s in rep["suggestions"]] and len(rep["suggestions"]) == len(cands) - 1
