"""Issue 10 items 2, 8, 9, 10: safe archive/CSV names, export-run never destroys weights, segment output names
never collide, classifier directories written whole and locked against a second writer."""
from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rel_helpers import cli, one_line_error


def _png(path: Path, hw: tuple[int, int] = (40, 48), value: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*hw, 3), value, np.uint8)).save(path)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): _digest(p) for p in sorted(d.rglob("*")) if p.is_file()}


# ---- item 2: upload names never become archive paths or spreadsheet formulas ----------------------------
HOSTILE = ["../../../home/u/.bashrc.png", "/etc/cron.d/evil.png", '=HYPERLINK("http://x","y").png',
           "-rf.png", "..\\..\\win.png", "frame.png", "FRAME.png", "+cmd.png", "@sum.png", "dup.png", "dup.png"]


def test_segment_zip_members_are_safe_and_csv_is_neutralised(rel_clf: Path) -> None:
    from engine.segmentation.classifier import load_classifier
    from engine.app.segment_session import outputs_zip, segment_frame

    clf = load_classifier(rel_clf, "cpu", use_cache=False)
    buf = io.BytesIO()
    Image.fromarray(np.full((24, 24, 3), 100, np.uint8)).save(buf, format="PNG")
    results = [segment_frame(clf, buf.getvalue(), name) for name in HOSTILE]
    assert [r.name for r in results] == HOSTILE  # the on-screen name stays as uploaded
    blob = outputs_zip(results, clf)
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        members = z.namelist()
        summary = z.read("summary.csv").decode()
    assert len(members) == len(set(m.casefold() for m in members)) == 4 * len(HOSTILE) + 2
    for m in members:
        assert "/" not in m and "\\" not in m and ".." not in m, m
        assert not m.startswith((".", "-", "+", "=", "@")), m
    rows = list(csv.reader(io.StringIO(summary)))
    header, body = rows[0], rows[1:]
    assert header[:2] == ["frame", "files"]
    assert len(body) == len(HOSTILE)
    for name, row in zip(HOSTILE, body):
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
        assert row[0] in (name, "'" + name)  # the uploaded name, formula-neutralised where needed
        stem = row[1].removesuffix("_*.png")
        assert f"{stem}_mask.png" in members
    assert body[2][0] == "'" + HOSTILE[2]


def test_safe_stem_rules() -> None:
    from engine.safe_names import csv_cell, safe_stem, unique_stems

    assert safe_stem("../../../home/u/.bashrc.png") == "bashrc"
    assert safe_stem("/etc/cron.d/evil.png") == "evil"
    assert safe_stem("C:\\x\\..\\y.tif") == "y"
    assert safe_stem("..") == safe_stem("") == safe_stem("/") == "frame"
    assert safe_stem("Ölfleck äugig (2).png") == "Ölfleck äugig (2)"  # letters of any script, spaces stay
    assert safe_stem('a"b<c>|d:e*f?g\x00h\ni.png') == "a_b_c_d_e_f_g_h_i"
    assert unique_stems(["a/x.png", "b/x.png", "x.jpg", "X.tif", "x-2.png"]) == ["x", "x-2", "x-3", "X-4", "x-2-2"]
    assert csv_cell("=1+1") == "'=1+1" and csv_cell("ok") == "ok" and csv_cell(3) == 3


# ---- item 9: segment output names never collide within a run ---------------------------------------------
def test_segment_same_stem_inputs_get_distinct_outputs(rel_clf: Path, tmp_path: Path, capsys) -> None:
    inputs = [_png(tmp_path / "a" / "x.png", value=30), _png(tmp_path / "b" / "x.png", (30, 36), value=200),
              _png(tmp_path / "x.jpg", (20, 28), value=90)]
    inputs[2].write_bytes((tmp_path / "a" / "x.png").read_bytes())  # content irrelevant; a PNG named .jpg decodes
    out = tmp_path / "out"
    res = cli(capsys, "segment", "--classifier", rel_clf, *inputs, "--out", out, "--no-cache")
    assert res.returncode == 0, res.stderr
    infos = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [i["input"] for i in infos] == [str(p) for p in inputs]
    masks = [i["mask"] for i in infos]
    assert len(set(masks)) == 3 and all(Path(m).is_file() for m in masks)
    assert [Path(m).name for m in masks] == ["x_mask.png", "x-2_mask.png", "x-3_mask.png"]
    for info, p in zip(infos, inputs):  # each mask has its own input's size: nothing was overwritten
        with Image.open(p) as im:
            assert Image.open(info["mask"]).size == im.size
    assert "b/x.png" in res.stderr and "x-2" in res.stderr  # says which input went where


# ---- item 8: export-run never rewrites its source and keeps a previous export on any error ---------------
def test_export_run_refuses_its_own_folder(rel_run: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(rel_run, run, ignore=shutil.ignore_patterns("feature_cache"))
    before = _tree(run)
    os.symlink(run, tmp_path / "alias")
    for out in (run, tmp_path / "alias", tmp_path / "x" / ".." / "run", Path(os.path.relpath(run))):
        res = cli(capsys, "export-run", "--run", run, "--out", out)
        one_line_error(res, "is the run itself")
        assert _tree(run) == before
    res = cli(capsys, "export-run", "--run", run, "--out", tmp_path)  # a folder that contains the run
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert _tree(run) == before


def test_export_run_disk_full_keeps_previous_export(rel_run: Path, tmp_path: Path, capsys,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "export"
    assert cli(capsys, "export-run", "--run", rel_run, "--out", out, "--fp32").returncode == 0
    before = _tree(out)
    real_save = torch.save

    def half_then_full(obj, f, *a, **k):  # noqa: ANN001, ANN002, ANN003 - a full disk in the middle of the weights
        tmp = io.BytesIO()
        real_save(obj, tmp)
        data = tmp.getvalue()
        if isinstance(f, (str, os.PathLike)):
            Path(f).write_bytes(data[: len(data) // 2])
        else:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_full)
    res = cli(capsys, "export-run", "--run", rel_run, "--out", out)
    one_line_error(res, "No space left on device")
    monkeypatch.undo()
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["export"]


def test_export_run_swaps_in_a_complete_export(rel_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "export"
    assert cli(capsys, "export-run", "--run", rel_run, "--out", out, "--fp32").returncode == 0
    assert cli(capsys, "export-run", "--run", rel_run, "--out", out).returncode == 0  # replaces the fp32 one
    sd = torch.load(out / "ema.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    assert json.loads((out / "config.json").read_text())["weights_dtype"] == "float16"
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "thesis.tex").write_text("mine")
    res = cli(capsys, "export-run", "--run", rel_run, "--out", tmp_path / "foreign")
    one_line_error(res, "thesis.tex")
    assert (tmp_path / "foreign" / "thesis.tex").read_text() == "mine"


# ---- item 10: a classifier directory is written whole, and only by one writer at a time ------------------
def test_classifier_save_failure_leaves_previous_pair(rel_clf: Path, rel_run: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.segmentation.classifier import load_classifier
    from engine.segmentation.classifier_training import FitConfig

    clf = load_classifier(rel_clf, "cpu", use_cache=False)
    dst = tmp_path / "clf"
    clf.save(dst)
    before = _tree(dst)
    clf.model.weights[0].data += 1.0  # a different fit
    monkeypatch.setattr(FitConfig, "to_dict", lambda self: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError):
        clf.save(dst)
    monkeypatch.undo()
    assert _tree(dst) == before  # never new weights beside the old config

    real = Path.write_text

    def fail_config(self, *a, **k):  # noqa: ANN001, ANN002, ANN003 - disk full after weights.pt is written
        if self.name == "config.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", fail_config)
    with pytest.raises(OSError, match="No space left"):
        clf.save(dst)
    monkeypatch.undo()
    assert _tree(dst) == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["clf"]
    clf.save(dst)
    assert _tree(dst)["weights.pt"] != before["weights.pt"]
    load_classifier(dst, "cpu", run=clf.run, use_cache=False)


def test_second_writer_on_an_output_is_refused(rel_run: Path, rel_data: Path, tmp_path: Path, capsys) -> None:
    from engine.output_lock import OutputLock, is_locked

    out = tmp_path / "clf"
    with OutputLock(out):
        assert is_locked(out) == os.getpid()
        res = cli(capsys, "fit", "--run", rel_run, "--data", rel_data, "--steps", "10", "--blocks", "1",
                  "--members", "1", "--epochs", "1", "--out", out, "--no-cache")
        one_line_error(res, f"{out} is in use by another process (pid {os.getpid()})")
        assert not out.exists()
        for args in (["export-run", "--run", rel_run, "--out", out],
                     ["pretrain", "--data", rel_data, "--preset", "tiny", "--out", out, "--max-steps", "1",
                      "--no-progress"]):
            one_line_error(cli(capsys, *args), "is in use by another process")
    assert is_locked(out) is None


def test_run_weights_from_another_save_are_detected(rel_run: Path, rel_data: Path, tmp_path: Path, capsys) -> None:
    """A run's config.json names the ema.pt it was saved with: a kill between the two writes (or a second
    writer) is refused at load instead of silently mixing two saves; --resume rewrites both."""
    from engine.models.run import load_run

    run = tmp_path / "run"
    shutil.copytree(rel_run, run, ignore=shutil.ignore_patterns("feature_cache"))
    load_run(run, "cpu")
    sd = torch.load(run / "ema.pt", weights_only=True)
    sd[next(iter(sd))] = sd[next(iter(sd))] + 0.5  # the weights of another save
    torch.save(sd, run / "ema.pt")
    res = cli(capsys, "sample", "--run", run, "--n", "1", "--sampling-steps", "2", "--out", tmp_path / "s")
    one_line_error(res, "ema.pt: does not match config.json", "pretrain --resume")
    step = json.loads((run / "config.json").read_text())["step"]
    res = cli(capsys, "pretrain", "--data", rel_data, "--preset", "tiny", "--out", run, "--resume",
              "--max-steps", str(step + 1), "--sample-every", "0", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert load_run(run, "cpu").meta["step"] == step + 1
