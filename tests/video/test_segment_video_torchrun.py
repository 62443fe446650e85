"""`torchrun --nproc_per_node=2 -m engine segment-video …` gives the same table and masks as one process."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, engine_cmd, free_port, run_engine, subprocess_env


@pytest.mark.slow
def test_two_ranks_equal_one_process(tiny_clf_dir: Path, disc_clip: Path, tmp_path: Path) -> None:
    common = ["segment-video", str(disc_clip), "--classifier", str(tiny_clf_dir), "--chunk", "3", "--batch", "2",
              "--smooth", "1", "--no-progress"]
    one = run_engine(*common, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    cmd = [engine_cmd()[0], "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "engine", *common,
           "--out", str(tmp_path / "two")]
    res = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["frames"] == 13
    a, b = pd.read_parquet(tmp_path / "one" / "table.parquet"), pd.read_parquet(tmp_path / "two" / "table.parquet")
    pd.testing.assert_frame_equal(a, b)
    with np.load(tmp_path / "one" / "masks.npz") as za, np.load(tmp_path / "two" / "masks.npz") as zb:
        assert (za["masks"] == zb["masks"]).all() and (za["frame_index"] == zb["frame_index"]).all()
