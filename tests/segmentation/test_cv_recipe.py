"""Cross-validation on train frames: folds, the CV sweep default, and `fit --recipe auto` without test masks."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.segmentation import classifier_training
from engine.scoring import cv
from engine.segmentation.classifier_training import FitConfig
from engine.cli import main
from engine.data.folder import FolderDataset
from engine.scoring.metrics import ConfusionMatrix, summarize

TINY_FIT = FitConfig(members=1, max_epochs=1, max_pixels=2000, val_fraction=0.0)


def test_kfold_indices_partition_frames_and_are_seeded() -> None:
    folds = cv.kfold_indices(10, 4, seed=3)
    assert len(folds) == 4
    vals = np.concatenate([v for _, v in folds])
    assert sorted(vals.tolist()) == list(range(10))  # every frame held out exactly once
    for tr, va in folds:
        assert not set(tr) & set(va) and len(tr) + len(va) == 10
    assert [v.tolist() for _, v in cv.kfold_indices(10, 4, seed=3)] == [v.tolist() for _, v in folds]
    assert [v.tolist() for _, v in cv.kfold_indices(10, 4, seed=4)] != [v.tolist() for _, v in folds]
    assert len(cv.kfold_indices(3, 5)) == 3  # folds capped at the number of frames
    with pytest.raises(ValueError, match="at least 2 labelled train frames"):
        cv.kfold_indices(1, 2)


def test_cv_score_never_predicts_a_frame_with_a_model_fitted_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each fold's fit sees only the other folds' masks; the pooled matrix equals the sum over frames."""
    g = torch.Generator().manual_seed(0)
    n, names = 6, ["a", "b", "c"]
    masks = torch.randint(0, 3, (n, 8, 8), generator=g)
    masks[:, 0, 0] = 255
    maps = [masks[:, None].float() + 0.1 * torch.randn(n, 4, 8, 8, generator=g)]  # features that reveal the label
    fitted_on: list[set[int]] = []
    real_fit = classifier_training.fit_ensemble

    def spy(mp, mk, *a, **k):  # noqa: ANN001, ANN002, ANN003
        fitted_on.append({i for i in range(n) if any(torch.equal(mk[j], masks[i]) for j in range(len(mk)))})
        return real_fit(mp, mk, *a, **k)

    monkeypatch.setattr(cv, "fit_ensemble", spy)
    res = cv.cv_score(maps, masks, names, TINY_FIT, folds=3, seed=0, keep_predictions=True)
    splits = cv.kfold_indices(n, 3, 0)
    assert [s for s in fitted_on] == [set(tr.tolist()) for tr, _ in splits]
    naive = ConfusionMatrix(3)
    for i in range(n):
        naive.update(res["_predictions"][i], masks[i].numpy())
    assert res["confusion"] == naive.matrix.tolist()
    assert res["miou"] == pytest.approx(summarize(naive, names)["miou"])
    assert res["cv"]["folds"] == 3 and len(res["cv"]["fold_miou"]) == 3


@pytest.fixture()
def train_only_data(synth_data: Path, tmp_path: Path) -> Path:
    """A copy of the data set with every test mask deleted (and the test split dropped from split.json)."""
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    split = json.loads((data / "split.json").read_text())
    for stem in split.get("test", []):
        (data / "masks" / f"{stem}.png").unlink()
    split.pop("test", None)
    (data / "split.json").write_text(json.dumps(split))
    assert FolderDataset(data).stems("test") == []
    return data


@pytest.fixture()
def mask_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stems whose mask is read from disk during the test."""
    reads: list[str] = []
    real = FolderDataset.mask

    def spy(self: FolderDataset, stem: str) -> np.ndarray:
        reads.append(stem)
        return real(self, stem)

    monkeypatch.setattr(FolderDataset, "mask", spy)
    return reads


def test_sweep_default_is_cross_validation_on_train(tiny_run_dir: Path, synth_data: Path, tmp_path: Path,
                                                    mask_reads: list[str], capsys: pytest.CaptureFixture) -> None:
    js = tmp_path / "sweep.json"
    rc = main(["sweep", "--run", str(tiny_run_dir), "--data", str(synth_data), "--steps", "50", "--blocks", "1,3",
               "--json", str(js), "--epochs", "1", "--folds", "2", "--no-cache"])
    assert rc == 0
    r = json.loads(js.read_text())
    train = set(FolderDataset(synth_data).stems("train"))
    assert r["mode"] == "cv" and r["folds"] == 2 and r["n_test"] == 0 and "cross-validation" in r["scored_on"]
    assert mask_reads and set(mask_reads) <= train  # not one test mask read
    assert np.isfinite(np.array(r["miou"], dtype=float)).all()


def test_sweep_test_split_only_when_asked(tiny_run_dir: Path, synth_data: Path, tmp_path: Path,
                                          mask_reads: list[str]) -> None:
    js = tmp_path / "sweep.json"
    assert main(["sweep", "--run", str(tiny_run_dir), "--data", str(synth_data), "--steps", "50", "--blocks", "1",
                 "--json", str(js), "--epochs", "1", "--split", "test", "--no-cache"]) == 0
    r = json.loads(js.read_text())
    assert r["mode"] == "test" and r["n_test"] == 3 and "reporting only" in r["scored_on"]
    assert set(mask_reads) & set(FolderDataset(synth_data).stems("test"))


def test_fit_recipe_auto_works_without_test_masks(tiny_run_dir: Path, train_only_data: Path, tmp_path: Path,
                                                  mask_reads: list[str], capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "clf"
    rc = main(["fit", "--run", str(tiny_run_dir), "--data", str(train_only_data), "--recipe", "auto",
               "--steps", "50,250", "--blocks", "1,2,3", "--folds", "2", "--members", "1", "--epochs", "1",
               "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0, capsys.readouterr().err[-2000:]
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    search = json.loads((out / "recipe_search.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["spec"]["steps"] == search["steps"] == printed["steps"]
    assert cfg["spec"]["blocks"] == search["blocks"] == printed["blocks"]
    assert set(search["steps"]) <= {50, 250} and set(search["blocks"]) <= {1, 2, 3}
    assert len(search["cells"]) == 6 and search["path"][0]["what"] == "best single cell"
    # techniques are scored with the final fit (--members 1 --epochs 1 here, not the block search's fit),
    # starting from the chosen recipe alone; they are only added when CV gains
    tech = search["techniques"]
    assert tech["fit"]["members"] == 1 and tech["fit"]["max_epochs"] == 1 and tech["fit"]["max_pixels"] == 400_000
    assert tech["trace"][0]["what"] == "recipe alone" and tech["trace"][0]["techniques"] == {}
    assert search["cv_miou"] == tech["cv_miou"] >= tech["trace"][0]["cv_miou"]
    assert "self_train" not in tech["tried"]  # no pool in this data set: skipped, not an error
    assert cfg["spec"]["n_noise"] == tech["chosen"].get("n_noise", 1)
    assert cfg["fit"]["flip_tta"] == tech["chosen"].get("flip_tta", False)
    assert cfg["fit"]["class_balanced"] == tech["chosen"].get("class_balanced", False)
    assert "augment" in tech["tried"] and cfg["fit"]["augment"] == tech["chosen"].get("augment", 0)
    assert "rgb_window" in tech["tried"] and cfg["spec"]["rgb_window"] == tech["chosen"].get("rgb_window", 0)
    assert set(mask_reads) <= set(FolderDataset(train_only_data).stems("train"))


def test_auto_recipe_refuses_a_test_scored_sweep(tiny_run_dir: Path, synth_data: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    js = tmp_path / "sweep.json"
    js.write_text(json.dumps({"mode": "test", "steps": [50], "blocks": [1], "miou": [[0.5]]}))
    rc = main(["fit", "--run", str(tiny_run_dir), "--data", str(synth_data), "--recipe", "auto", "--steps", "50",
               "--blocks", "1", "--sweep", str(js), "--out", str(tmp_path / "clf"), "--no-cache"])
    assert rc == 2
    assert "scored on test frames" in capsys.readouterr().err


def test_flip_averaging_appends_the_mirrored_view_as_members() -> None:
    from engine.segmentation.pixel_classifier import EnsembleMLP
    from engine.segmentation.self_training import ensemble_logits

    g = torch.Generator().manual_seed(0)
    model = EnsembleMLP(6, 3, (8,), members=2, seed=0).eval()
    maps = [torch.randn(4, 4, 4, generator=g), torch.randn(2, 8, 8, generator=g)]
    mirrored = [m.flip(-1) for m in maps]
    out = ensemble_logits(model, maps, (8, 8), mirrored)
    plain = model.predict_logits(maps, (8, 8))
    assert out.shape == (4, 3, 8, 8) and torch.allclose(out[:2], plain)
    # mirrored features of a mirrored frame, mirrored back: the plain prediction again (up to interpolation)
    assert torch.allclose(out[2:], plain, atol=1e-5)


def test_pseudo_labels_keep_only_confident_pixels() -> None:
    from engine.segmentation.pixel_classifier import EnsembleMLP
    from engine.segmentation.self_training import ensemble_logits, pseudo_labels

    g = torch.Generator().manual_seed(1)
    model = EnsembleMLP(4, 3, (8,), members=3, seed=0).eval()
    pool = [torch.randn(5, 4, 6, 6, generator=g)]
    confs = torch.stack([ensemble_logits(model, [pool[0][i]], (6, 6)).softmax(1).mean(0).max(0).values
                         for i in range(5)])
    thr = float(confs.median())  # about half the pixels pass
    masks, stats = pseudo_labels(model, pool, (6, 6), thr)
    for i in range(5):
        probs = ensemble_logits(model, [pool[0][i]], (6, 6)).softmax(1).mean(0)
        conf, cls = probs.max(0)
        naive = torch.where(conf >= thr, cls, torch.full_like(cls, 255))
        assert torch.equal(masks[i], naive)
    share = float((masks != 255).float().mean())
    assert stats["pseudo_pixel_share"] == pytest.approx(share) and 0 < share < 1


def test_sweep_checkpoint_check_follows_the_identity_scheme_it_was_written_with(tiny_run) -> None:
    """A sweep written before identity scheme 2 carries the weights-only hash and no scheme: still the same run."""
    from engine.errors import ConfigError
    from engine.scoring.recipe_search import cell_scores_from_sweep

    base = {"mode": "cv", "folds": 2, "cv_seed": 0, "steps": [50], "blocks": [1], "miou": [[0.5]]}
    legacy = {**base, "run_weights_hash": tiny_run.identity(1)}
    current = {**base, "run_weights_hash": tiny_run.weights_hash, "run_identity_scheme": 2}
    for sweep in (legacy, current):
        assert cell_scores_from_sweep(sweep, tiny_run, 2, 0) == {(50, 1): 0.5}
    for sweep in ({**current, "run_identity_scheme": 1}, {**legacy, "run_identity_scheme": 2}):
        with pytest.raises(ConfigError, match="^--sweep: the sweep was computed on a different checkpoint than --run$"):
            cell_scores_from_sweep(sweep, tiny_run, 2, 0)
    with pytest.raises(ConfigError, match="^--sweep: unknown run_identity_scheme 7; expected 1 or 2$"):
        cell_scores_from_sweep({**current, "run_identity_scheme": 7}, tiny_run, 2, 0)


def test_fit_help_names_the_techniques_in_search_order() -> None:
    """The `--techniques` help is a literal (the parser does not import the search); it must follow TECHNIQUES."""
    from engine.cli import build_parser
    from engine.scoring.recipe_search import TECHNIQUES

    parser = build_parser()
    sub = next(a for a in parser._actions if getattr(a, "choices", None) and "fit" in a.choices)
    action = next(a for a in sub.choices["fit"]._actions if a.dest == "techniques")
    assert f"default {','.join(TECHNIQUES)}, tried in that order" in action.help
