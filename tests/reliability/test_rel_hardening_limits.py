"""Issue 10 items 5, 11, 17: resource bounds checked before any allocation, non-finite numbers stopped at
their source, and one validation of --device / --eta for every command."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rel_helpers import cli, one_line_error

REPO = Path(__file__).resolve().parents[2]


def _png(path: Path, wh: tuple[int, int], value: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((wh[1], wh[0], 3), value, np.uint8)).save(path)
    return path


# ---- item 5: extreme aspect ratios are refused from the header, per file ---------------------------------
def test_segment_thin_frame_refused_others_processed(rel_clf: Path, tmp_path: Path, capsys) -> None:
    thin = _png(tmp_path / "thin_4x2000.png", (4, 2000))
    assert thin.stat().st_size < 400  # a tiny file: the size on disk says nothing
    good = _png(tmp_path / "frame.png", (40, 32))
    res = cli(capsys, "segment", "--classifier", rel_clf, thin, good, "--out", tmp_path / "o", "--no-cache")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "thin_4x2000.png" in errors[0] and "aspect ratio of 500.0:1" in errors[0], errors
    assert (tmp_path / "o" / "frame_mask.png").is_file()


def test_aspect_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from engine.data import images

    buf = io.BytesIO()
    Image.new("RGB", (60000, 1)).save(buf, format="PNG")

    def no_decode(self):  # noqa: ANN001
        raise AssertionError("decoded a frame the header already rules out")

    monkeypatch.setattr(Image.Image, "load", no_decode)
    with pytest.raises(images.ImageError, match=r"x.png: image is 60000x1, an aspect ratio of 60,000.0:1"):
        images.load_image(buf.getvalue(), name="x.png")


def test_fit_on_data_set_with_thin_frame_is_one_line(rel_run: Path, rel_data: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    shutil.copytree(rel_data, data)
    stem = json.loads((data / "split.json").read_text())["train"][0] if (data / "split.json").exists() else None
    img = next(p for p in (data / "images").iterdir() if stem is None or p.stem == stem)
    _png(img.with_suffix(".png"), (2000, 4))
    if img.suffix != ".png":
        img.unlink()
    Image.fromarray(np.zeros((4, 2000), np.uint8)).save(data / "masks" / f"{img.stem}.png")
    res = cli(capsys, "fit", "--run", rel_run, "--data", data, "--steps", "10", "--blocks", "1", "--members", "1",
              "--epochs", "1", "--out", tmp_path / "clf", "--no-cache")
    one_line_error(res, f"{img.stem}.png", "aspect ratio")


def test_segment_page_survives_thin_and_failing_uploads(dashboard_env: dict[str, str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from streamlit.testing.v1 import AppTest

    import engine.app.segment_session as session

    real = session.segment_frame

    def flaky(clf, source, name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - one upload runs out of memory
        if name == "boom.png":
            raise MemoryError("cannot allocate 262 GB")
        return real(clf, source, name, *args, **kwargs)

    monkeypatch.setattr(session, "segment_frame", flaky)

    def png(wh: tuple[int, int]) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(np.full((wh[1], wh[0], 3), 80, np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=240)
    at.run()
    at.switch_page("app_pages/segment.py").run()
    files = [("thin.png", png((4, 2000)), "image/png"), ("boom.png", png((40, 40)), "image/png"),
             ("ok.png", png((48, 40)), "image/png")]
    at.get("file_uploader")[0].set_value(files).run()
    assert not at.exception, [e.message for e in at.exception]
    # (a flat grey ok.png is also, rightly, flagged as unlike the training frames by the familiarity model)
    errors = [e.value for e in at.error if "kind of frame the model is meant for" not in e.value]
    assert len(errors) == 2, errors
    assert any("thin.png" in e and "aspect ratio" in e for e in errors), errors
    assert any("boom.png" in e and "memory" in e for e in errors), errors
    assert {r.name for r in at.session_state["seg_results"].values()} == {"ok.png"}


# ---- item 5: every size-like flag has an upper bound; estimates refuse what cannot fit ------------------
@pytest.mark.parametrize("args, flag", [
    (["fit", "--run", "R", "--data", "D", "--out", "O", "--members", "1000000"], "--members"),
    (["fit", "--run", "R", "--data", "D", "--out", "O", "--label-size", "100000"], "--label-size"),
    (["fit", "--run", "R", "--data", "D", "--out", "O", "--batch-size", "100000000"], "--batch-size"),
    (["fit", "--run", "R", "--data", "D", "--out", "O", "--n-noise", "100000"], "--n-noise"),
    (["sweep", "--run", "R", "--data", "D", "--json", "J", "--members", "100000"], "--members"),
    (["sample", "--run", "R", "--out", "O", "--n", "100000000"], "--n"),
    (["sample", "--run", "R", "--out", "O", "--batch-size", "100000"], "--batch-size"),
    (["pretrain", "--data", "D", "--out", "O", "--batch-size", "1000000"], "--batch-size"),
    (["pretrain", "--data", "D", "--out", "O", "--max-steps", "10000000000"], "--max-steps"),
    (["pca", "--run", "R", "--data", "D", "--out", "O", "--step", "1", "--block", "1", "--n", "100000"], "--n"),
    (["data", "synth", "O", "--size", "100000"], "--size"),
    (["data", "synth", "O", "--n-unlabelled", "100000000"], "--n-unlabelled"),
    (["compare", "--data", "D", "--json", "J", "--figure-frames", "100000"], "--figure-frames"),
])
def test_size_flags_have_upper_bounds(args: list[str], flag: str, tmp_path: Path, capsys) -> None:
    res = cli(capsys, *[str(tmp_path / a) if a in ("O", "J") else a for a in args])  # nothing lands in the repo
    line = one_line_error(res, usage=True)
    assert flag in line and "must be at most" in line, line


def test_fit_preflight_memory_estimate_refuses(rel_run: Path, rel_data: Path, tmp_path: Path, capsys,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 64 * 1024**2)
    res = cli(capsys, "fit", "--run", rel_run, "--data", rel_data, "--steps", "10", "--blocks", "1",
              "--members", "100", "--label-size", "2048", "--out", tmp_path / "clf", "--no-cache")
    one_line_error(res, "fit (", "--label-size 2048", "of memory but 64 MiB is available", "lower --label-size")
    monkeypatch.setattr(memory, "available_bytes", lambda: 16 * 1024**2)  # 4096 samples of 32 px need ~26 MB
    res = cli(capsys, "sample", "--run", rel_run, "--n", "4096", "--out", tmp_path / "s")
    one_line_error(res, "sample (--n 4096", "lower --n")
    assert not (tmp_path / "clf").exists() and not (tmp_path / "s").exists()


def test_out_of_memory_anywhere_is_one_line(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.commands.sample_cmd as sample_cmd

    def oom(args):  # noqa: ANN001
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 262000000000 bytes")

    monkeypatch.setattr(sample_cmd, "run", oom)
    res = cli(capsys, "sample", "--run", "R", "--out", "O")
    one_line_error(res, "out of memory", "262000000000 bytes")


# ---- item 11: non-finite numbers stop at their source --------------------------------------------------
def test_pretrain_diverging_stops_and_keeps_last_good_checkpoint(rel_data: Path, tmp_path: Path, capsys) -> None:
    from engine.models.run import load_run

    run = tmp_path / "run"
    res = cli(capsys, "pretrain", "--data", rel_data, "--preset", "tiny", "--out", run, "--max-steps", "8",
              "--save-every", "1", "--log-every", "1", "--sample-every", "0", "--no-progress", "--lr", "1e12")
    line = one_line_error(res, "training diverged at step", "the loss is nan", "lower --lr")
    kept = int(line.split("checkpoint (step ")[1].split(")")[0])
    assert json.loads((run / "config.json").read_text())["step"] == kept
    loaded = load_run(run, "cpu")  # finite weights (checked at load)
    assert all(torch.isfinite(p).all() for p in loaded.model.parameters())
    assert json.loads((run / "progress.json").read_text())["status"] == "failed"
    for line in (run / "loss.jsonl").read_text().splitlines():
        assert math.isfinite(json.loads(line)["loss"])


def _poison(path: Path, key_index: int = 3) -> str:
    sd = torch.load(path, weights_only=True)
    key = [k for k, v in sd.items() if v.is_floating_point()][key_index]
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] = float("nan")
    torch.save(sd, path)
    return key


def test_nan_weights_refused_at_load(rel_run: Path, rel_data: Path, rel_clf: Path, tmp_path: Path, capsys) -> None:
    from engine.segmentation.classifier import load_classifier
    from engine.models.checkpoint import CheckpointError
    from engine.models.run import load_run

    run = tmp_path / "run"
    shutil.copytree(rel_run, run, ignore=shutil.ignore_patterns("feature_cache"))
    key = _poison(run / "ema.pt")
    for args in (["sample", "--run", run, "--n", "1", "--out", tmp_path / "s"],
                 ["fit", "--run", run, "--data", rel_data, "--steps", "10", "--blocks", "1", "--out", tmp_path / "c",
                  "--no-cache"]):
        one_line_error(cli(capsys, *args), "ema.pt", repr(key), "non-finite")
    assert not (tmp_path / "s").exists() and not (tmp_path / "c").exists()

    clf = tmp_path / "clf"
    shutil.copytree(rel_clf, clf)
    ckey = _poison(clf / "weights.pt", 0)
    with pytest.raises(CheckpointError, match=f"weights.pt: tensor '{ckey}' holds 1 non-finite"):
        load_classifier(clf, "cpu", run=load_run(rel_run, "cpu"), use_cache=False)


def test_json_writer_refuses_nan(tmp_path: Path) -> None:
    from engine.atomic import json_text, write_json_atomic

    with pytest.raises(ValueError, match=r"m.json: refusing to write a non-finite number .* 'metrics.per_class\[1\]'"):
        write_json_atomic(tmp_path / "m.json", {"metrics": {"per_class": [0.5, float("nan")]}})
    assert not (tmp_path / "m.json").exists()
    with pytest.raises(ValueError, match="'score'"):
        json_text({"score": float("inf")})


# ---- item 17: one validation of --device and --eta for every command -----------------------------------
COMMANDS_WITH_DEVICE = {
    "pretrain": ["--data", "D", "--out", "O"],
    "sample": ["--run", "R", "--out", "O"],
    "fit": ["--run", "R", "--data", "D", "--out", "O"],
    "evaluate": ["--classifier", "C", "--data", "D", "--json", "J"],
    "sweep": ["--run", "R", "--data", "D", "--json", "J"],
    "segment": ["--classifier", "C", "x.png", "--out", "O"],
    "pca": ["--run", "R", "--data", "D", "--step", "1", "--block", "1", "--out", "O"],
    "compare": ["--data", "D", "--json", "J"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS_WITH_DEVICE))
@pytest.mark.parametrize("dev, needle", [("meta", "cannot run the models"), ("bogus", "unknown device"),
                                         ("cuda:99", "cuda:99")])
def test_device_validated_everywhere(command: str, dev: str, needle: str, capsys) -> None:
    if dev == "cuda:99" and not torch.cuda.is_available():
        needle = "CUDA is not available"
    line = one_line_error(cli(capsys, command, *COMMANDS_WITH_DEVICE[command], "--device", dev), usage=True)
    assert "--device" in line and needle in line, line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine's message")
def test_cuda_on_cpu_machine_is_one_line(rel_run: Path, tmp_path: Path, capsys) -> None:
    line = one_line_error(cli(capsys, "sample", "--run", rel_run, "--out", tmp_path / "s", "--device", "cuda"),
                          usage=True)
    assert "CUDA is not available on this machine" in line and "--device cpu" in line


@pytest.mark.parametrize("eta", ["nan", "inf", "-inf", "-0.5"])
def test_eta_must_be_finite(eta: str, capsys) -> None:
    line = one_line_error(cli(capsys, "sample", "--run", "R", "--out", "O", f"--eta={eta}"), usage=True)
    assert "--eta" in line and ("finite" in line or ">= 0" in line), line


def test_ddim_sampler_refuses_non_finite_eta() -> None:
    from engine.diffusion import GaussianDiffusion
    from engine.diffusion.samplers import DDIMSampler

    diff = GaussianDiffusion.from_config("linear", 100, False)
    for eta in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eta must be a finite number"):
            DDIMSampler(diff, 10, eta)
