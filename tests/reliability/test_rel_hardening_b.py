"""Issue 10, part B: nothing overwritten by surprise, nothing silently wrong (items 6, 7, 12-16, 18).

Each test failed on main at 7ce9b2e (the command succeeded or coerced silently) and passes now.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data.folder import FolderDataset
from engine.errors import DataError, UserError
from rel_helpers import cli, one_line_error

SYNTH_SMALL = ("--size", "32", "--n-unlabelled", "1", "--n-train", "1", "--n-test", "1")


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes (to prove nothing changed)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _edit_json(path: Path, **changes: object) -> None:
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


# ---- item 6: data synth onto a non-empty OUT ---------------------------------------------------------
def test_synth_refuses_an_existing_dataset_unless_forced(rel_data: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    shutil.copytree(rel_data, data)
    (data / "notes.txt").write_text("mine")
    before = _tree(data)
    res = cli(capsys, "data", "synth", data, *SYNTH_SMALL, "--seed", "5")
    one_line_error(res, str(data), "existing data set", "--force")
    assert _tree(data) == before  # nothing replaced
    res = cli(capsys, "data", "synth", data, *SYNTH_SMALL, "--seed", "5", "--force")
    assert res.returncode == 0, res.stderr
    ds = FolderDataset(data)
    assert len(ds.stems("train")) == 1 and len(ds.stems("test")) == 1  # the new set, not a mix with the old one
    assert sorted(p.name for p in (data / "images").iterdir()) == ["synth_00000.png", "synth_00001.png", "synth_00002.png"]
    assert (data / "notes.txt").read_text() == "mine"  # files that are not part of a data set stay
    assert not [p for p in data.iterdir() if p.name.startswith(".dataset-")]


def test_synth_refuses_a_run_or_foreign_dir(rel_run: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    run = tmp_path / "run"
    shutil.copytree(rel_run, run)
    before = _tree(run)
    for extra in ((), ("--force",)):
        one_line_error(cli(capsys, "data", "synth", run, *SYNTH_SMALL, *extra), str(run), "is a run")
    assert _tree(run) == before
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    one_line_error(cli(capsys, "data", "synth", foreign, *SYNTH_SMALL), "non-empty directory", "thesis.tex")


# ---- item 7: fit --out that is something else, checked before training ----------------------------------
@pytest.mark.parametrize("target", ["run", "data", "method", "foreign", "file"])
def test_fit_refuses_an_unusable_out_before_training(target: str, rel_run: Path, rel_data: Path, tmp_path: Path,
                                                     capsys) -> None:  # noqa: ANN001
    run = tmp_path / "run"
    shutil.copytree(rel_run, run)
    out = {"run": run, "data": rel_data, "method": tmp_path / "m", "foreign": tmp_path / "f",
           "file": tmp_path / "plain.txt" / "clf"}[target]
    if target == "method":
        out.mkdir()
        (out / "method.json").write_text("{}")
        (out / "weights.pt").write_bytes(b"")
    elif target == "foreign":
        out.mkdir()
        (out / "keep.txt").write_text("x")
    elif target == "file":
        out.parent.write_text("x")
    before = _tree(run)
    res = cli(capsys, "fit", "--run", run, "--data", rel_data, "--steps", "10", "--blocks", "1", "--members", "1",
              "--epochs", "1", "--out", out, "--no-cache")
    expected = {"run": "is a run", "data": "is a data set", "method": "is a saved method",
                "foreign": "non-empty directory", "file": "cannot be created"}[target]
    line = one_line_error(res, "--out", expected)  # one line: no progress output, so no training happened
    assert str(out) in line
    assert _tree(run) == before  # the run's config.json is intact and it still loads
    from engine.models.run import load_run

    load_run(run, "cpu")


def test_pretrain_refuses_to_write_a_run_into_another_artefact(rel_data: Path, rel_clf: Path, tmp_path: Path,
                                                              capsys) -> None:  # noqa: ANN001
    clf = tmp_path / "clf"
    shutil.copytree(rel_clf, clf)
    before = _tree(clf)
    for out, needle in ((clf, "is a classifier"), (rel_data, "is a data set")):
        res = cli(capsys, "pretrain", "--data", rel_data, "--preset", "tiny", "--out", out, "--max-steps", "1")
        one_line_error(res, "--out", needle)
    assert _tree(clf) == before


# ---- item 12: the run's identity covers its activation config -------------------------------------------
@pytest.mark.parametrize("section,key,value", [("diffusion", "num_timesteps", 500), ("unet", "num_head_channels", 16)])
def test_run_identity_covers_activation_config(section: str, key: str, value: int, rel_run: Path, rel_clf: Path,
                                               tmp_path: Path) -> None:
    from engine.segmentation.classifier import load_classifier
    from engine.models.checkpoint import CheckpointError
    from engine.models.run import load_run

    run, clf = tmp_path / "run", tmp_path / "clf"
    shutil.copytree(rel_run, run)
    shutil.copytree(rel_clf, clf)
    _edit_json(clf / "config.json", run="../run")
    before = load_run(run, "cpu")
    load_classifier(clf, "cpu", use_cache=False)  # fits its run
    meta = json.loads((run / "config.json").read_text())
    meta[section][key] = value
    (run / "config.json").write_text(json.dumps(meta))
    after = load_run(run, "cpu")
    assert after.weights_sha256 == before.weights_sha256  # same weight file ...
    assert after.weights_hash != before.weights_hash  # ... other identity, so other feature-cache keys
    with pytest.raises(CheckpointError, match=rf"different checkpoint.*changed config: {section}\.{key} \S+ → {value}"):
        load_classifier(clf, "cpu", use_cache=False)


def test_classifiers_saved_before_identity_scheme_2_still_load(tmp_path: Path) -> None:
    """A classifier written before scheme 2 records a weights-only hash and no scheme: it is checked under
    scheme 1 (the shipped classifier written that way, rebuilt since, is recreated from today's)."""
    from engine.segmentation.classifier import load_classifier
    from engine.models.checkpoint import CheckpointError
    from engine.models.run import load_run

    repo = Path(__file__).resolve().parents[2] / "assets"
    run = load_run(repo / "demo_run", "cpu")
    old = tmp_path / "old"
    shutil.copytree(repo / "demo_classifier", old)
    meta = json.loads((old / "config.json").read_text())
    for key in ("run_identity_scheme", "run_activation_config"):
        meta.pop(key, None)
    meta.update(run=str((repo / "demo_run").resolve()), run_weights_hash=run.identity(1))
    (old / "config.json").write_text(json.dumps(meta))
    clf = load_classifier(old, "cpu", use_cache=False)
    assert clf.run.identity(1) == meta["run_weights_hash"] != clf.run.weights_hash
    broken = tmp_path / "clf"
    shutil.copytree(old, broken)
    _edit_json(broken / "config.json", run_weights_hash="0" * 64)
    with pytest.raises(CheckpointError, match="different checkpoint"):
        load_classifier(broken, "cpu", use_cache=False)


# ---- item 13: a fit that learnt nothing is an error -----------------------------------------------------
def test_fit_batch_size_one_is_refused_by_flag(rel_run: Path, rel_data: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    res = cli(capsys, "fit", "--run", rel_run, "--data", rel_data, "--out", tmp_path / "clf", "--batch-size", "1")
    one_line_error(res, "--batch-size", "BatchNorm", usage=True)
    assert not (tmp_path / "clf").exists()


def test_fit_uses_every_pixel_and_refuses_a_frozen_fit() -> None:
    from engine.segmentation.classifier_training import FitConfig, FitError, batch_bounds, fit_ensemble

    assert batch_bounds(7, 3) == [0, 3, 7]  # a 1-pixel tail joins the batch before it (was skipped)
    assert batch_bounds(6, 3) == [0, 3, 6] and batch_bounds(2, 512) == [0, 2]
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, 4, 8, 8, generator=g)]
    masks = torch.randint(0, 3, (2, 8, 8), generator=g)
    model, stats = fit_ensemble(maps, masks, 3, FitConfig(members=1, max_epochs=2, batch_size=2, seed=0))
    assert stats["train_pixels"] == 116 and stats["epochs"] >= 1
    for val_fraction in (0.1, 0.0):
        with pytest.raises(FitError, match=r"optimiser steps changed no weight \(lr 0.0\).*learnt nothing"):
            fit_ensemble(maps, masks, 3, FitConfig(members=2, max_epochs=2, lr=0.0, val_fraction=val_fraction))


# ---- item 14: pretrain --resume with other settings -------------------------------------------------------
def test_resume_refuses_changed_settings_and_records_what_ran(rel_run: Path, rel_data: Path, tmp_path: Path,
                                                               capsys) -> None:  # noqa: ANN001
    run = tmp_path / "run"
    shutil.copytree(rel_run, run)
    other = tmp_path / "other"
    shutil.copytree(rel_data, other)
    pooled = json.loads((other / "split.json").read_text())["unlabeled"][0]
    from PIL import Image

    Image.new("RGB", (32, 32), (9, 9, 9)).save(other / "images" / f"{pooled}.png")  # same stems, another image
    base = ("pretrain", "--out", run, "--resume", "--no-progress", "--sample-every", "0")
    before = _tree(run)
    res = cli(capsys, *base, "--data", rel_data, "--lr", "0.5", "--seed", "3")
    one_line_error(res, str(run), "lr 0.0001 → 0.5 (--lr)", "seed 0 → 3 (--seed)")
    res = cli(capsys, *base, "--data", other)
    one_line_error(res, "pool images differ", "--data")
    assert _tree(run) == before
    res = cli(capsys, *base, "--data", rel_data, "--max-steps", "3")  # the run's own settings; more steps is safe
    assert res.returncode == 0, res.stderr
    meta = json.loads((run / "config.json").read_text())
    assert meta["step"] == 3 and meta["train"]["lr"] == 1e-4 and meta["train"]["max_steps"] == 3
    assert meta["resumes"] == [{"at_step": 2, "changed": {"max_steps": [2, 3]}}]


# ---- item 15: evaluate on another class table ---------------------------------------------------------
def test_evaluate_refuses_a_different_class_table(rel_clf: Path, rel_data: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    shutil.copytree(rel_data, data)
    classes = json.loads((data / "classes.json").read_text())
    classes["classes"][0]["name"], classes["classes"][1]["name"] = classes["classes"][1]["name"], classes["classes"][0]["name"]
    (data / "classes.json").write_text(json.dumps(classes))
    res = cli(capsys, "evaluate", "--classifier", rel_clf, "--data", data, "--json", tmp_path / "m.json", "--no-cache")
    one_line_error(res, str(data), "id 0: classifier 'pupil' vs data set 'iris'", "id 1: classifier 'iris' vs data set 'pupil'")
    assert not (tmp_path / "m.json").exists()
    classes["classes"] = json.loads((rel_data / "classes.json").read_text())["classes"] + [
        {"id": 5, "name": "extra", "color": [1, 2, 3]}]
    (data / "classes.json").write_text(json.dumps(classes))
    res = cli(capsys, "evaluate", "--classifier", rel_clf, "--data", data, "--json", tmp_path / "m.json", "--no-cache")
    one_line_error(res, "id 5 ('extra') only in the data set")


# ---- item 16: classes.json is validated strictly ----------------------------------------------------------
@pytest.mark.parametrize("mutate,needle", [
    (lambda c: c[0].update(id=True), "classes[0]: id must be a whole number 0..254, got true"),
    (lambda c: c[1].update(id=1.9), "classes[1]: id must be a whole number 0..254, got 1.9"),
    (lambda c: c[0].update(color=[255, 0, 255.9]), "classes[0]: color must be three whole numbers 0..255"),
    (lambda c: c[0].update(color=[255, 0, True]), "classes[0]: color must be three whole numbers 0..255"),
    (lambda c: c[2].update(name=""), "classes[2]: name must be non-empty"),
    (lambda c: c[2].update(name="iris\nextra:1,2,3"), "holds a control character"),
    (lambda c: c[3].update(color=list(c[0]["color"])), "share the colour"),
    (lambda c: c[3].update(id=0), "class id 0 is used twice"),
    (lambda c: c[3].update(id=300), "id must be in 0..254"),
    (lambda c: c[4].update(name=c[0]["name"]), "duplicate class names"),
])
def test_classes_json_is_strict(mutate, needle: str, rel_data: Path, tmp_path: Path) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    shutil.copytree(rel_data, data)
    table = json.loads((data / "classes.json").read_text())
    mutate(table["classes"])
    (data / "classes.json").write_text(json.dumps(table))
    with pytest.raises(DataError) as e:
        FolderDataset(data)
    assert str(e.value).startswith(f"{data / 'classes.json'}: ") and needle in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


# ---- item 18: test frames never reach pretraining by default --------------------------------------------
def test_default_pool_excludes_test_frames(tmp_path: Path) -> None:
    """Without split.json: 22 labelled frames → 20 train, 2 test; the pool is the other 23 images."""
    from helpers import write_tiny_dataset

    ds = FolderDataset(write_tiny_dataset(tmp_path / "data", n=25, size=8, n_masks=22))
    assert ds.stems("test") == ["f020", "f021"]
    assert ds.stems("unlabeled") == [f"f{i:03d}" for i in range(25) if i not in (20, 21)]


@pytest.mark.parametrize("leak", ["train", "unlabeled"])
def test_split_json_sharing_test_stems_is_refused(leak: str, rel_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(rel_data, data)
    split = json.loads((data / "split.json").read_text())
    split[leak] = split[leak] + split["test"][:1]
    (data / "split.json").write_text(json.dumps(split))
    with pytest.raises(DataError, match=rf"split.json: 1 test stem\(s\) are also in '{leak}': \['{split['test'][0]}'\]"):
        FolderDataset(data)


def test_pretraining_on_test_frames_is_explicit_and_recorded(rel_data: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    ds = FolderDataset(rel_data)
    n_pool, n_test = len(ds.stems("unlabeled")), len(ds.stems("test"))
    common = ("pretrain", "--data", rel_data, "--preset", "tiny", "--max-steps", "1", "--sample-every", "0",
              "--no-progress")
    assert cli(capsys, *common, "--out", tmp_path / "a").returncode == 0
    assert cli(capsys, *common, "--out", tmp_path / "b", "--include-test-frames").returncode == 0
    a, b = (json.loads((tmp_path / r / "config.json").read_text()) for r in "ab")
    assert (a["pool_size"], a["pool_includes_test"]) == (n_pool, False)
    assert (b["pool_size"], b["pool_includes_test"]) == (n_pool + n_test, True)


def test_user_errors_are_one_line_but_bugs_keep_their_traceback(capsys, monkeypatch) -> None:  # noqa: ANN001
    """Only UserError (and OS errors) become `error: …`; a plain ValueError from a bug is not hidden."""
    import engine.commands.data_cmd as data_cmd

    def buggy(args):  # noqa: ANN001, ANN202
        raise ValueError("a bug")

    monkeypatch.setattr(data_cmd, "run_synth", buggy)
    with pytest.raises(ValueError, match="a bug"):
        cli(capsys, "data", "synth", "/nonexistent/x")
    assert issubclass(DataError, UserError) and issubclass(UserError, ValueError)
    assert np.isfinite(1.0)
