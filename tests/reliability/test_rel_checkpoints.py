"""Matrix rows "checkpoints", "classifier/run directories missing files" and "CLI flags out of range"."""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch

from engine.segmentation.classifier import load_classifier
from engine.models.checkpoint import CheckpointError
from engine.models.config import get_preset
from engine.models.run import load_run
from rel_helpers import cli, one_line_error

MARKER = Path("/tmp") / f"diffseg_pwned_{os.getpid()}"


class Evil:
    """Pickles to a call of os.system: loading it must never run the command."""

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {MARKER}",))


def _truncated(run: Path) -> str:
    data = (run / "ema.pt").read_bytes()
    (run / "ema.pt").write_bytes(data[: len(data) // 2])
    return r"ema.pt: not a readable PyTorch checkpoint \(truncated or corrupt\?\)"


def _wrong_architecture(run: Path) -> str:
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 2)).state_dict(), run / "ema.pt")
    return r"ema.pt: missing key '.*'.*made for another architecture or preset"


def _update_config(directory: Path, **changes: object) -> None:
    """Rewrite DIR/config.json with `changes` applied."""
    meta = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**meta, **changes}))


def _wrong_preset_flags(run: Path) -> str:
    _update_config(run, unet=get_preset("demo").unet.to_dict(), preset="demo")  # tiny weights, demo config
    return r"ema.pt: (key '.*' has shape .* in the checkpoint but .* in the model|missing key).*preset"


def _not_a_state_dict(run: Path) -> str:
    torch.save({"epoch": 3, "notes": ["a", "b"]}, run / "ema.pt")
    return r"ema.pt: not a state_dict \(expected a mapping of parameter names to tensors"


def _plain_pickle(run: Path) -> str:
    (run / "ema.pt").write_bytes(pickle.dumps([1, 2, 3]))
    return r"ema.pt: refused to load: it holds objects other than tensors.*Detail: Unsupported operand"


def _malicious_pickle(run: Path) -> str:
    torch.save({"w": torch.zeros(1), "payload": Evil()}, run / "ema.pt")
    return r"ema.pt: refused to load: it holds objects other than tensors .*nothing in it was executed.*GLOBAL posix.system"


def _malicious_raw_pickle(run: Path) -> str:
    (run / "ema.pt").write_bytes(pickle.dumps(Evil()))
    return r"ema.pt: refused to load.*nothing in it was executed"


def _newer_format(run: Path) -> str:
    _update_config(run, format_version=99)
    return r"config.json: format_version 99 is newer than this DiffSeg Studio understands \(1\); upgrade"


def _missing_config(run: Path) -> str:
    (run / "config.json").unlink()
    return r"not a run directory \(missing config.json\)"


def _missing_ema(run: Path) -> str:
    (run / "ema.pt").unlink()
    return r"run directory has no weights \(ema.pt missing\)"


RUN_CASES = {"truncated_file": _truncated, "wrong_architecture": _wrong_architecture,
             "wrong_preset_flags": _wrong_preset_flags, "pickle_not_state_dict": _not_a_state_dict,
             "plain_pickle_list": _plain_pickle, "malicious_pickle": _malicious_pickle,
             "malicious_raw_pickle": _malicious_raw_pickle, "format_version_99": _newer_format,
             "run_missing_config_json": _missing_config, "run_missing_ema_pt": _missing_ema}


@pytest.fixture(params=sorted(RUN_CASES))
def bad_run(request: pytest.FixtureRequest, rel_run: Path, tmp_path: Path) -> tuple[Path, str]:
    run = tmp_path / "run"
    shutil.copytree(rel_run, run, ignore=shutil.ignore_patterns("feature_cache"))
    MARKER.unlink(missing_ok=True)
    return run, RUN_CASES[request.param](run)


def test_load_run_error(bad_run: tuple[Path, str]) -> None:
    run, pattern = bad_run
    with pytest.raises(CheckpointError) as info:
        load_run(run, "cpu")
    msg = str(info.value)
    assert re.search(pattern, msg), msg
    assert str(run) in msg and "\n" not in msg
    assert "set to `False`" not in msg  # never advise turning the safety off
    assert not MARKER.exists(), "pickled code was executed"


def test_sample_cli_error(bad_run: tuple[Path, str], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    run, pattern = bad_run
    res = cli(capsys, "sample", "--run", run, "--out", tmp_path / "samples", "--n", "1", "--sampling-steps", "2")
    line = one_line_error(res)
    assert re.search(pattern, line), line
    assert not MARKER.exists(), "pickled code was executed"
    assert not (tmp_path / "samples").exists()


def test_malicious_pickle_in_resume_state(rel_run: Path, rel_data: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """train_state.pt is read with weights_only too: `pretrain --resume` refuses it and runs nothing."""
    run = tmp_path / "run"
    shutil.copytree(rel_run, run, ignore=shutil.ignore_patterns("feature_cache"))
    torch.save({"step": 2, "model": Evil()}, run / "train_state.pt")
    MARKER.unlink(missing_ok=True)
    res = cli(capsys, "pretrain", "--data", rel_data, "--preset", "tiny", "--out", run, "--max-steps", "3",
              "--resume", "--no-progress")
    one_line_error(res, "train_state.pt", "cannot resume")
    assert not MARKER.exists()


# ---- classifier directories ------------------------------------------------------------------------
def _clf_missing_config(clf: Path) -> str:
    (clf / "config.json").unlink()
    return r"classifier directory is missing config.json"


def _clf_missing_weights(clf: Path) -> str:
    (clf / "weights.pt").unlink()
    return r"classifier directory is missing weights.pt"


def _clf_truncated_weights(clf: Path) -> str:
    data = (clf / "weights.pt").read_bytes()
    (clf / "weights.pt").write_bytes(data[:100])
    return r"weights.pt: cannot load classifier weights"


def _clf_malicious_weights(clf: Path) -> str:
    torch.save({"x": Evil()}, clf / "weights.pt")
    return r"weights.pt: cannot load classifier weights"


def _clf_newer_format(clf: Path) -> str:
    _update_config(clf, format_version=99)
    return r"config.json: format_version 99 is newer than supported \(1\); upgrade"


def _clf_run_missing(clf: Path) -> str:
    _update_config(clf, run="/nonexistent/run_dir")
    return r"/nonexistent/run_dir: no such run directory or checkpoint file"


CLF_CASES = {"clf_missing_config_json": _clf_missing_config, "clf_missing_weights_pt": _clf_missing_weights,
             "clf_truncated_weights": _clf_truncated_weights, "clf_malicious_weights": _clf_malicious_weights,
             "clf_format_version_99": _clf_newer_format, "clf_run_missing": _clf_run_missing}


@pytest.fixture(params=sorted(CLF_CASES))
def bad_clf(request: pytest.FixtureRequest, rel_clf: Path, tmp_path: Path) -> tuple[Path, str]:
    clf = tmp_path / "clf"
    shutil.copytree(rel_clf, clf)
    run_ref = json.loads((clf / "config.json").read_text())["run"]  # keep it valid from the new place
    _update_config(clf, run=str((rel_clf / run_ref).resolve()))
    MARKER.unlink(missing_ok=True)
    return clf, CLF_CASES[request.param](clf)


def test_load_classifier_error(bad_clf: tuple[Path, str]) -> None:
    clf, pattern = bad_clf
    with pytest.raises(CheckpointError) as info:
        load_classifier(clf, "cpu", use_cache=False)
    assert re.search(pattern, str(info.value)), str(info.value)
    assert not MARKER.exists()


def test_segment_cli_classifier_error(bad_clf: tuple[Path, str], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    clf, pattern = bad_clf
    img = tmp_path / "frame.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (100, 50, 20)).save(img)
    res = cli(capsys, "segment", "--classifier", clf, "--no-cache", "--out", tmp_path / "out", img)
    line = one_line_error(res)
    assert re.search(pattern, line), line
    assert not MARKER.exists()


# ---- CLI flags out of range --------------------------------------------------------------------------
FLAG_CASES = {
    "fit_steps_t_ge_T": (["fit", "--steps", "2000"], ["--steps", "[2000] out of range", "valid timesteps are 0..999"]),
    "fit_steps_negative": (["fit", "--steps=-5,10"], ["--steps", "[-5] out of range", "valid timesteps are 0..999"]),
    "fit_blocks_unknown": (["fit", "--blocks", "99"], ["--blocks", "unknown decoder block(s) [99]", "valid blocks are 0..3"]),
    "fit_blocks_negative": (["fit", "--blocks=-1"], ["--blocks", "[-1]", "valid blocks are 0..3"]),
    "sample_sampling_steps_0": (["sample", "--sampling-steps", "0"], ["--sampling-steps", "must be >= 1, got 0"]),
    "pca_block_unknown": (["pca", "--block", "99", "--step", "10"], ["--block", "[99]", "valid blocks are 0..3"]),
    "pca_step_negative": (["pca", "--block", "1", "--step=-1"], ["--step", "[-1] out of range", "valid timesteps are 0..999"]),
    "pca_step_ge_T": (["pca", "--block", "1", "--step", "1000"], ["--step", "[1000]", "valid timesteps are 0..999"]),
}


@pytest.mark.parametrize("case", sorted(FLAG_CASES))
def test_cli_flag_out_of_range(case: str, rel_run: Path, rel_data: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    args, needles = FLAG_CASES[case]
    cmd = args[0]
    common = {"fit": ["--run", rel_run, "--data", rel_data, "--out", tmp_path / "o", "--no-cache"],
              "sample": ["--run", rel_run, "--out", tmp_path / "o"],
              "pca": ["--run", rel_run, "--data", rel_data, "--out", tmp_path / "o.png", "--no-cache"]}[cmd]
    res = cli(capsys, *args, *common)
    one_line_error(res, *needles, usage=True)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.png").exists()
