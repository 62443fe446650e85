"""Pretraining: outputs of a run, bit-exact resume, kill -9 / SIGTERM safety, 2-process DDP under torchrun."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from engine.models.config import get_preset
from engine.models.run import load_run
from engine.training.pretrain import make_batch, pretrain
from helpers import REPO, engine_cmd, free_port, read_loss_log, run_engine, subprocess_env

TIME_FIELDS = {"time", "steps_per_s"}


def _tiny(max_steps: int, **train) -> "object":
    p = get_preset("tiny")
    p.train.max_steps = max_steps
    p.train.log_every = 1
    p.train.sample_every = 0
    p.train.save_every = 1000
    for k, v in train.items():
        setattr(p.train, k, v)
    return p


def _state(run: Path) -> dict:
    return torch.load(run / "train_state.pt", map_location="cpu", weights_only=True)


def _strip(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if k not in TIME_FIELDS} for line in lines]


def _assert_no_temp_files(run: Path) -> None:
    stray = [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    assert not stray, stray


def test_pretrain_20_steps_writes_a_run(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = pretrain(tiny_data, _tiny(20, log_every=5, sample_every=10, save_every=10), run, device="cpu", progress_bar=False,
                   sample_n=4)
    assert res["step"] == 20 and res["loss"] == res["loss"]  # not NaN
    for name in ("config.json", "ema.pt", "train_state.pt", "loss.jsonl", "progress.json",
                 "samples/step_0000010.png", "samples/step_0000020.png", "samples/latest.png"):
        assert (run / name).is_file(), name
    meta = json.loads((run / "config.json").read_text())
    assert meta["step"] == 20 and meta["preset"] == "tiny" and meta["pool_size"] == 8
    assert [line["step"] for line in read_loss_log(run)] == [5, 10, 15, 20]
    assert json.loads((run / "progress.json").read_text())["status"] == "done"
    loaded = load_run(run, "cpu")
    assert loaded.meta["step"] == 20 and loaded.image_size == 32
    st = _state(run)
    assert st["step"] == 20
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, st["ema"][k]), k  # ema.pt holds the EMA weights
    _assert_no_temp_files(run)
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(tiny_data, _tiny(20), run, device="cpu", progress_bar=False)


def test_resume_is_bit_exact(tiny_data: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    pretrain(tiny_data, _tiny(6), a, device="cpu", progress_bar=False)
    pretrain(tiny_data, _tiny(3), b, device="cpu", progress_bar=False)
    assert _state(b)["step"] == 3
    pretrain(tiny_data, _tiny(6), b, resume=True, device="cpu", progress_bar=False)
    sa, sb = _state(a), _state(b)
    assert sa["step"] == sb["step"] == 6
    for part in ("model", "ema"):
        for k in sa[part]:
            assert torch.equal(sa[part][k], sb[part][k]), (part, k)
    assert _strip(read_loss_log(a)) == _strip(read_loss_log(b))
    assert [line["step"] for line in read_loss_log(b)] == [1, 2, 3, 4, 5, 6]


def test_run_config_without_norm_groups_resumes_as_32_groups(tiny_data: Path, tmp_path: Path) -> None:
    """Runs written before `norm_groups` existed hold no such key: they are 32-group runs and still resume."""
    run = tmp_path / "run"
    pretrain(tiny_data, _tiny(1), run, device="cpu", progress_bar=False)
    cfg = json.loads((run / "config.json").read_text())
    del cfg["unet"]["norm_groups"]
    (run / "config.json").write_text(json.dumps(cfg))
    assert pretrain(tiny_data, _tiny(2), run, resume=True, device="cpu", progress_bar=False)["step"] == 2


def test_resume_refuses_another_preset(tiny_data: Path, tmp_path: Path) -> None:
    from engine.models.checkpoint import CheckpointError

    run = tmp_path / "run"
    pretrain(tiny_data, _tiny(1), run, device="cpu", progress_bar=False)
    other = _tiny(2)
    other.unet.model_channels = 64
    with pytest.raises(CheckpointError, match="model_channels 32 → 64"):
        pretrain(tiny_data, other, run, resume=True, device="cpu", progress_bar=False)
    regrouped = _tiny(2)
    regrouped.unet.norm_groups = 8  # same parameters, other function: must not resume silently
    with pytest.raises(CheckpointError, match="norm_groups 32 → 8"):
        pretrain(tiny_data, regrouped, run, resume=True, device="cpu", progress_bar=False)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        pretrain(tiny_data, _tiny(2), tmp_path / "empty", resume=True, device="cpu", progress_bar=False)


def _start(run: Path, data: Path, *extra: str) -> subprocess.Popen:
    cmd = engine_cmd("pretrain", "--data", data, "--preset", "tiny", "--out", run, "--no-progress",
                     "--sample-every", "0", "--log-every", "1", *extra)
    return subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.time() > end:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.05)


def _checkpoint_step(run: Path) -> int:
    try:
        return json.loads((run / "config.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def test_sigkill_then_resume(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _start(run, tiny_data, "--max-steps", "1000", "--save-every", "1")
    _wait_for(lambda: _checkpoint_step(run) >= 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # whatever the kill cut short, every checkpoint file that exists is whole
    killed_at = _state(run)["step"]
    assert killed_at >= 3
    torch.load(run / "ema.pt", weights_only=True)
    json.loads((run / "config.json").read_text())
    target = killed_at + 3
    res = run_engine("pretrain", "--data", tiny_data, "--preset", "tiny", "--out", run, "--no-progress",
                     "--sample-every", "0", "--log-every", "1", "--save-every", "1", "--max-steps", target,
                     "--resume")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["step"] == target
    assert _state(run)["step"] == target
    assert load_run(run, "cpu").meta["step"] == target
    steps = [line["step"] for line in read_loss_log(run)]
    assert steps == list(range(1, target + 1)), steps  # continuous: no gap, no duplicate
    _assert_no_temp_files(run)


def test_sigterm_checkpoints_and_exits_130(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _start(run, tiny_data, "--max-steps", "1000", "--save-every", "1000")
    _wait_for(lambda: (run / "loss.jsonl").is_file() and len(read_loss_log(run)) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    step = _state(run)["step"]
    assert step >= 2 and _checkpoint_step(run) == step
    assert json.loads((run / "progress.json").read_text())["status"] == "stopped"
    res = run_engine("pretrain", "--data", tiny_data, "--preset", "tiny", "--out", run, "--no-progress",
                     "--sample-every", "0", "--log-every", "1", "--max-steps", step + 2, "--resume")
    assert res.returncode == 0, res.stderr[-2000:]
    assert _state(run)["step"] == step + 2
    steps = [line["step"] for line in read_loss_log(run)]
    assert steps == sorted(set(steps)) and steps[-1] == step + 2


def test_rank_batches_tile_the_global_batch() -> None:
    pool = torch.randint(0, 255, (10, 3, 8, 8), dtype=torch.uint8)
    full = make_batch(pool, 0, 7, 4, 1, 0, 1000, True, True)
    halves = [make_batch(pool, 0, 7, 2, 2, r, 1000, True, True) for r in (0, 1)]
    for i in range(3):
        assert torch.equal(full[i], torch.cat([h[i] for h in halves]))


def test_torchrun_two_processes(tiny_data: Path, tmp_path: Path) -> None:
    """2 gloo ranks × batch 2 hold identical weights, equal (up to fp) to 1 process × batch 4."""
    dump, run2, run1 = tmp_path / "dump", tmp_path / "run2", tmp_path / "run1"
    common = ["--data", str(tiny_data), "--preset", "tiny", "--max-steps", "4", "--no-progress",
              "--sample-every", "0", "--log-every", "1"]
    cmd = [engine_cmd()[0], "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "engine", "pretrain",
           *common, "--out", str(run2), "--batch-size", "2"]
    res = subprocess.run(cmd, cwd=REPO, env=subprocess_env(DIFFSEG_DUMP_RANK_WEIGHTS=str(dump)),
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    r0 = torch.load(dump / "rank0.pt", weights_only=True)
    r1 = torch.load(dump / "rank1.pt", weights_only=True)
    assert r0["step"] == r1["step"] == 4
    for part in ("model", "ema"):
        for k in r0[part]:
            assert torch.equal(r0[part][k], r1[part][k]), (part, k)
    assert json.loads((run2 / "config.json").read_text())["world_size"] == 2
    # one process with the whole global batch follows the same trajectory
    pretrain(tiny_data, _tiny(4, batch_size=4), run1, device="cpu", progress_bar=False)
    s1 = _state(run1)
    for k, v in s1["model"].items():
        torch.testing.assert_close(r0["model"][k], v, rtol=1e-4, atol=1e-6, msg=k)
    l1, l2 = read_loss_log(run1), read_loss_log(run2)
    assert [x["step"] for x in l2] == [1, 2, 3, 4]
    for a, b in zip(l1, l2):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


def test_pools_never_include_test_frames(tmp_path: Path) -> None:
    import json as _json

    from engine.training.pretrain import load_pool
    from helpers import write_tiny_dataset

    d = write_tiny_dataset(tmp_path / "d", n=6, n_masks=4)
    (d / "split.json").write_text(_json.dumps({"train": ["f000", "f001"], "test": ["f002", "f003"],
                                               "unlabeled": ["f004", "f005"]}))
    assert load_pool(d, 16, "unlabeled").shape == (2, 3, 16, 16)
    assert load_pool(d, 16, "train").shape == (2, 3, 16, 16)
    both = load_pool(d, 16, "unlabeled+train")
    assert both.shape == (4, 3, 16, 16) and both.dtype == torch.uint8
    with pytest.raises(ValueError, match="unknown pool 'test'"):
        load_pool(d, 16, "test")
    (d / "split.json").write_text(_json.dumps({"train": ["f000", "f001"], "test": ["f002", "f003"], "unlabeled": []}))
    with pytest.raises(ValueError, match=r"'unlabeled' pool is empty.*--pool train"):
        load_pool(d, 16, "unlabeled")
