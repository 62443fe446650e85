"""Matrix rows "faults": SIGKILLed pretraining, a broken feature cache, a full disk while writing outputs."""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import atomic
from engine.segmentation.feature_cache import FeatureCache
from engine.segmentation.features import FeatureExtractor, FeatureSpec
from engine.models.config import get_preset
from engine.models.checkpoint import CheckpointError
from engine.models.run import load_run
from engine.training.pretrain import pretrain
from helpers import REPO, engine_cmd, read_loss_log, subprocess_env

# ---- pretraining killed with SIGKILL at 5 random points ----------------------------------------------
N_STEPS = 16
TRAIN_FLAGS = ["--preset", "tiny", "--no-progress", "--sample-every", "0", "--log-every", "1", "--save-every", "1",
               "--max-steps", str(N_STEPS)]


def _ckpt_step(run: Path) -> int:
    try:
        return int(json.loads((run / "config.json").read_text())["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return 0


def _check_whole(run: Path) -> int:
    """Every checkpoint file that exists loads; the log is continuous up to where the kill cut it."""
    state = torch.load(run / "train_state.pt", map_location="cpu", weights_only=True)
    torch.load(run / "ema.pt", map_location="cpu", weights_only=True)
    try:
        loaded = load_run(run, "cpu")  # config.json + ema.pt agree with the architecture
        assert loaded.meta["step"] in (state["step"], state["step"] - 1)  # the kill may fall between the writes
    except CheckpointError as e:  # the kill fell between ema.pt and config.json: detected; --resume repairs it
        assert "does not match config.json" in str(e), e
    whole_lines = []
    for line in (run / "loss.jsonl").read_text().splitlines():
        try:
            whole_lines.append(json.loads(line)["step"])
        except json.JSONDecodeError:
            continue  # only the very last line may be cut by the kill
    assert whole_lines == list(range(1, len(whole_lines) + 1)), whole_lines
    assert len(whole_lines) >= state["step"]  # the log is written before the checkpoint: nothing is missing
    return int(state["step"])


@pytest.mark.slow
def test_sigkill_five_times_then_resume_equals_uninterrupted(rel_data: Path, tmp_path: Path) -> None:
    rng = random.Random(6)
    targets = sorted(rng.sample(range(2, N_STEPS - 1), 5))
    run = tmp_path / "run"
    resumed_from = []
    for i, target in enumerate(targets):
        cmd = engine_cmd("pretrain", "--data", rel_data, "--out", run, *TRAIN_FLAGS, *(["--resume"] if i else []))
        proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        target = max(target, _ckpt_step(run) + 1)
        end = time.time() + 120
        while _ckpt_step(run) < target:
            assert proc.poll() is None, f"run ended early: {proc.stderr.read()[-2000:]}"
            assert time.time() < end, "timed out"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.15))  # land anywhere in the next step or checkpoint write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        step = _check_whole(run)
        assert step < N_STEPS, "the run finished before it could be killed"
        resumed_from.append(step)
    proc = subprocess.run(engine_cmd("pretrain", "--data", rel_data, "--out", run, *TRAIN_FLAGS, "--resume"),
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert resumed_from == sorted(resumed_from) and len(set(resumed_from)) == 5, resumed_from
    assert [line["step"] for line in read_loss_log(run)] == list(range(1, N_STEPS + 1))
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]

    ref = tmp_path / "ref"  # the same run without interruptions, in this process (1 thread, as the subprocesses)
    preset = get_preset("tiny")
    preset.train.max_steps, preset.train.log_every, preset.train.save_every, preset.train.sample_every = N_STEPS, 1, 1, 0
    pretrain(rel_data, preset, ref, device="cpu", progress_bar=False)
    for name in ("ema.pt", "train_state.pt"):
        a = torch.load(run / name, map_location="cpu", weights_only=True)
        b = torch.load(ref / name, map_location="cpu", weights_only=True)
        sd_a, sd_b = (a["model"], b["model"]) if "model" in a else (a, b)
        assert sd_a.keys() == sd_b.keys()
        for k in sd_a:
            assert torch.equal(sd_a[k], sd_b[k]), (name, k)
    ref_losses = [line["loss"] for line in read_loss_log(ref)]
    assert [line["loss"] for line in read_loss_log(run)] == ref_losses


# ---- feature cache deleted / corrupted / full mid-run ---------------------------------------------------
SPEC = FeatureSpec((10, 50), (1, 2))


def _images(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _garbage_everything(d: Path) -> None:
    rng = np.random.default_rng(0)
    for p in d.rglob("*"):
        if p.is_file():
            p.write_bytes(rng.integers(0, 256, max(64, p.stat().st_size), dtype=np.uint8).tobytes())


@pytest.fixture(scope="module")
def run_and_reference(rel_run: Path):
    run = load_run(rel_run, "cpu")
    images = _images()
    ext = FeatureExtractor(run, SPEC, None)
    ref_many = ext.many(images)
    ref_single = [ext(img) for img in images]
    return run, images, ref_many, ref_single


def _assert_identical(maps, ref) -> None:
    assert len(maps) == len(ref)
    for a, b in zip(maps, ref):
        assert torch.equal(a.float(), b.float())


FAULTS = {
    "deleted": lambda d: shutil.rmtree(d),
    "corrupted": _garbage_everything,
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_cache_fault_mid_run_recomputes(fault: str, run_and_reference, tmp_path: Path) -> None:
    run, images, ref_many, ref_single = run_and_reference
    cache_dir = tmp_path / "cache"
    cache = FeatureCache(cache_dir)
    ext = FeatureExtractor(run, SPEC, cache)
    _assert_identical(ext.many(images), ref_many)  # fills the cache

    def strike(done: int, total: int) -> None:
        if done == 2:  # half way through the second pass
            FAULTS[fault](cache_dir)

    _assert_identical(ext.many(images, strike), ref_many)
    for img, ref in zip(images, ref_single):  # and once more, after the fault, image by image
        _assert_identical(ext(img), ref)
    cache.close()
    fresh = FeatureExtractor(run, SPEC, FeatureCache(cache_dir))  # a new process on the damaged directory
    for img, ref in zip(images, ref_single):
        _assert_identical(fresh(img), ref)


def test_cache_full_tiny_size_limit(run_and_reference, tmp_path: Path) -> None:
    run, images, ref_many, ref_single = run_and_reference
    cache = FeatureCache(tmp_path / "cache", size_limit=4096)  # smaller than one image's maps: constant eviction
    ext = FeatureExtractor(run, SPEC, cache)
    for _ in range(2):
        _assert_identical(ext.many(images), ref_many)
    assert cache.stats()["bytes"] <= 4096 + 64 * 1024  # diskcache culls down to the limit after each write


def test_cache_disk_full_enospc(run_and_reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, images, ref_many, ref_single = run_and_reference
    cache = FeatureCache(tmp_path / "cache")
    ext = FeatureExtractor(run, SPEC, cache)
    _assert_identical(ext.many(images[:2]), [m[:2] for m in ref_many])  # half the images cached
    import diskcache

    def full(self, *a, **k):  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(diskcache.Disk, "store", full)
    _assert_identical(ext.many(images), ref_many)
    for img, ref in zip(images, ref_single):
        _assert_identical(ext(img), ref)
    assert cache.errors > 0


def test_cache_pickled_row_never_executed(tmp_path: Path) -> None:
    """A row planted with diskcache's default (pickling) Disk is refused as a miss, its code never run."""
    import diskcache

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, (f"touch {marker}",))

    with diskcache.Cache(str(tmp_path / "cache")) as planted:
        planted.set("k", Evil())
    cache = FeatureCache(tmp_path / "cache")
    assert cache.get("k") is None
    assert not marker.exists()


# ---- disk full while writing outputs ------------------------------------------------------------------
def _enospc(*a, **k):  # noqa: ANN002, ANN003
    raise OSError(errno.ENOSPC, "No space left on device")


class _HalfWriter:
    """Wraps a file: writes half the bytes, then fails like a full disk."""

    def __init__(self, f):  # noqa: ANN001
        self.f = f

    def __enter__(self):  # noqa: ANN204
        return self

    def __exit__(self, *exc):  # noqa: ANN002
        self.f.close()

    def write(self, data: bytes) -> int:
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.f, name)


def _fail_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic.os, "replace", _enospc)


def _fail_write(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.fdopen
    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, *a, **k: _HalfWriter(real(fd, *a, **k)))


WRITERS = {
    "write_bytes_atomic": lambda p: atomic.write_bytes_atomic(p, b"new" * 1000),
    "write_json_atomic": lambda p: atomic.write_json_atomic(p, {"new": list(range(100))}),
    "torch_save_atomic": lambda p: atomic.torch_save_atomic({"w": torch.ones(100)}, p),
}


@pytest.mark.parametrize("where", ["os.replace", "f.write"])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_disk_full_keeps_previous_output(writer: str, where: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out" / "result.bin"
    target.parent.mkdir()
    target.write_bytes(b"previous complete output")
    (_fail_replace if where == "os.replace" else _fail_write)(monkeypatch)
    with pytest.raises(OSError) as info:
        WRITERS[writer](target)
    assert info.value.errno == errno.ENOSPC
    assert str(target) in str(info.value)  # the message says which file could not be written
    assert target.read_bytes() == b"previous complete output"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.bin"]  # no temp file left


def test_disk_full_during_checkpoint_keeps_previous(rel_run: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """pretrain's checkpoint write fails on a full disk: clear OSError, the last good checkpoint still loads."""
    run = tmp_path / "run"
    shutil.copytree(rel_run, run, ignore=shutil.ignore_patterns("feature_cache"))
    before = {n: (run / n).read_bytes() for n in ("train_state.pt", "ema.pt", "config.json")}
    preset = get_preset("tiny")
    preset.train.max_steps, preset.train.save_every, preset.train.sample_every = 3, 1, 0
    real_replace = os.replace

    def replace_fails_for_checkpoints(src, dst):  # noqa: ANN001
        if str(dst).endswith(".pt"):
            _enospc()
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace_fails_for_checkpoints)
    with pytest.raises(OSError, match=r"No space left on device: '.*train_state.pt'"):
        pretrain(_data_of(rel_run), preset, run, resume=True, device="cpu", progress_bar=False)
    monkeypatch.undo()
    for n, data in before.items():
        assert (run / n).read_bytes() == data
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    load_run(run, "cpu")


def _data_of(run: Path) -> Path:
    return Path(json.loads((run / "config.json").read_text())["data"])


def test_segment_cli_disk_full(rel_clf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    """`segment` on a full disk: one error line naming the output file, earlier outputs untouched."""
    from PIL import Image

    from rel_helpers import cli, one_line_error

    img = tmp_path / "frame.png"
    Image.new("RGB", (32, 32), (90, 40, 30)).save(img)
    out = tmp_path / "out"
    res = cli(capsys, "segment", "--classifier", rel_clf, "--no-cache", "--out", out, img)
    assert res.returncode == 0, res.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _fail_replace(monkeypatch)
    res = cli(capsys, "segment", "--classifier", rel_clf, "--no-cache", "--out", out, img)
    one_line_error(res, "No space left on device", "frame_mask.png")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
