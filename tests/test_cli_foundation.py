"""`python -m engine data synth | pretrain | sample` end to end, and clear one-line errors for bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import REPO, run_engine

HAS_SYNTH = (REPO / "engine" / "data" / "synthetic.py").is_file()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    if not HAS_SYNTH:
        return tiny_data
    out = tmp_path_factory.mktemp("cli") / "synth"
    res = run_engine("data", "synth", out, "--size", "32", "--n-unlabelled", "6", "--n-train", "2", "--n-test", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    run = tmp_path_factory.mktemp("cli") / "run"
    res = run_engine("pretrain", "--data", data_dir, "--preset", "tiny", "--out", run, "--max-steps", "2",
                     "--sample-every", "0", "--no-progress")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["step"] == 2
    return run


@pytest.mark.skipif(not HAS_SYNTH, reason="engine/data/synthetic.py not there yet")
def test_data_synth_layout(data_dir: Path) -> None:
    split = json.loads((data_dir / "split.json").read_text())
    assert len(split["train"]) == 2 and len(split["test"]) == 2
    assert len(split["unlabeled"]) >= 6
    classes = json.loads((data_dir / "classes.json").read_text())["classes"]
    assert {c["name"] for c in classes} >= {"pupil", "iris", "cornea", "skin", "instrument"}
    img = np.asarray(Image.open(next((data_dir / "images").iterdir())))
    assert img.shape[:2] == (32, 32)


def test_pretrain_writes_run(run_dir: Path) -> None:
    for name in ("config.json", "ema.pt", "train_state.pt", "loss.jsonl"):
        assert (run_dir / name).is_file(), name


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sample(run_dir: Path, tmp_path: Path, sampler: str) -> None:
    out = tmp_path / "samples"
    res = run_engine("sample", "--run", run_dir, "--n", "2", "--sampler", sampler, "--sampling-steps", "3",
                     "--out", out)
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["n"] == 2
    files = sorted(p.name for p in out.iterdir())
    assert files == ["grid.png", "sample_0000.png", "sample_0001.png"]
    assert np.asarray(Image.open(out / "sample_0000.png")).shape == (32, 32, 3)


def _one_line_error(res, *needles: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.strip().splitlines() if not line.startswith("INFO")]
    last = lines[-1]
    for n in needles:
        assert n in last, last


@pytest.mark.parametrize("args,needles", [
    (["sample", "--run", "RUN", "--out", "OUT", "--sampling-steps", "0"], ["--sampling-steps", "must be >= 1"]),
    (["sample", "--run", "RUN", "--out", "OUT", "--sampling-steps", "5000"], ["sampling steps must be in 1..1000"]),
    (["sample", "--run", "RUN", "--out", "OUT", "--sampler", "euler"], ["--sampler", "invalid choice"]),
    (["sample", "--run", "RUN", "--out", "OUT", "--n", "two"], ["--n", "expected a whole number"]),
    (["sample", "--run", "/no/such/run", "--out", "OUT"], ["error:", "/no/such/run", "no such run"]),
    (["pretrain", "--data", "/no/such/data", "--preset", "tiny", "--out", "OUT", "--max-steps", "1"],
     ["error:", "/no/such/data"]),
    (["pretrain", "--data", "DATA", "--preset", "huge", "--out", "OUT"], ["--preset", "invalid choice"]),
    (["pretrain", "--data", "DATA", "--preset", "tiny", "--out", "OUT", "--max-steps", "-1"], ["--max-steps"]),
    (["pretrain", "--data", "DATA", "--preset", "tiny", "--out", "RUN"], ["error:", "--resume"]),
])
def test_bad_input_gives_one_line(run_dir: Path, data_dir: Path, tmp_path: Path, args: list[str],
                                   needles: list[str]) -> None:
    subst = {"RUN": str(run_dir), "OUT": str(tmp_path / "out"), "DATA": str(data_dir)}
    res = run_engine(*[subst.get(a, a) for a in args])
    _one_line_error(res, *needles)


def test_sample_from_corrupt_run(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad_run"
    shutil.copytree(run_dir, bad)
    data = (bad / "ema.pt").read_bytes()
    (bad / "ema.pt").write_bytes(data[: len(data) // 3])
    res = run_engine("sample", "--run", bad, "--out", tmp_path / "o", "--n", "1", "--sampling-steps", "2")
    _one_line_error(res, "error:", "ema.pt")
