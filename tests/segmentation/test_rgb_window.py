"""The frame's own RGB window as one more feature map (FeatureSpec.rgb_window): values against a naive loop, the
same map on every extraction path, strict configs, and a classifier fitted and used with it end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.cli import main
from engine.errors import ConfigError
from engine.segmentation.classifier import load_classifier
from engine.segmentation.feature_cache import FeatureCache
from engine.segmentation.features import FeatureExtractor, FeatureSpec, rgb_window_map


def _images(n: int, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("k,hw", [(1, (5, 7)), (3, (6, 4)), (5, (9, 9)), (7, (3, 11))])
def test_window_map_equals_a_naive_loop(k: int, hw: tuple[int, int]) -> None:
    x = _images(2, *hw, seed=k)
    got = rgb_window_map(x, k)
    h, w = hw
    naive = torch.empty(2, 3 * k * k, h, w)
    for c in range(3):
        for dy in range(k):
            for dx in range(k):
                for y in range(h):
                    for xx in range(w):
                        sy = min(max(y + dy - k // 2, 0), h - 1)  # edges replicated
                        sx = min(max(xx + dx - k // 2, 0), w - 1)
                        naive[:, c * k * k + dy * k + dx, y, xx] = x[:, c, sy, sx]
    torch.testing.assert_close(got, naive.to(torch.float16).float(), atol=0, rtol=0)
    assert torch.equal(got[:, [c * k * k + (k // 2) * k + k // 2 for c in range(3)]], x.to(torch.float16).float())


def test_spec_window_is_checked_and_old_configs_mean_none() -> None:
    for bad in (2, 4, -1, 11):
        with pytest.raises(ConfigError, match="rgb_window must be 0 \\(off\\) or an odd window side 1..9"):
            FeatureSpec((10,), (1,), rgb_window=bad)
    spec = FeatureSpec((10, 50), (1, 2), 0, 2, 3)
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    old = {k: v for k, v in spec.to_dict().items() if k != "rgb_window"}  # written before the option existed
    assert FeatureSpec.from_dict(old).rgb_window == 0
    with pytest.raises(ConfigError, match="spec.rgb_window"):
        FeatureSpec.from_dict({**spec.to_dict(), "rgb_window": "3"})


def test_every_extraction_path_appends_the_same_window_map(tiny_run, tmp_path: Path) -> None:
    spec = FeatureSpec((30, 250), (1, 3), rgb_window=3)
    images = _images(3)
    plain = FeatureExtractor(tiny_run, FeatureSpec((30, 250), (1, 3)), FeatureCache(tmp_path / "c0"))
    ext = FeatureExtractor(tiny_run, spec, FeatureCache(tmp_path / "c1"))
    assert ext.channels == plain.channels + [27]
    assert ext.map_shapes(32, 48) == plain.map_shapes(32, 48) + [(27, 32, 48)]
    expected = rgb_window_map(images, 3)
    uncached = FeatureExtractor(tiny_run, spec)
    assert ext.cached_many(images) is None  # nothing cached yet: the window alone does not count as a hit
    for i, img in enumerate(images):
        miss, hit, nocache = ext(img), ext(img), uncached(img)
        assert len(miss) == len(hit) == len(nocache) == 5
        for maps in (miss, hit, nocache):
            assert torch.equal(maps[-1], expected[i])
        for a, b in zip(miss, hit):
            assert torch.equal(a, b)
        for a, b in zip(plain(img), miss[:4]):  # the diffusion maps are untouched by the option
            assert torch.equal(a, b)
    stacked = ext.cached_many(images)
    assert stacked is not None and torch.equal(stacked[-1].float(), expected)
    assert torch.equal(ext.compute_batch(images)[-1], expected)
    assert torch.equal(FeatureExtractor(tiny_run, spec, FeatureCache(tmp_path / "c2")).many(images)[-1].float(), expected)
    assert torch.equal(ext.many(images)[-1].float(), expected)


def test_fit_with_a_window_then_segment_and_evaluate(tiny_run_dir: Path, synth_data: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "clf"
    rc = main(["fit", "--run", str(tiny_run_dir), "--data", str(synth_data), "--steps", "50", "--blocks", "1,3",
               "--rgb-window", "3", "--members", "2", "--epochs", "1", "--flip-tta", "--out", str(out),
               "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0, capsys.readouterr().err[-2000:]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["spec"]["rgb_window"] == 3 and cfg["channels"][-1] == 27
    clf = load_classifier(out, "cpu", cache_dir=tmp_path / "cache")
    assert clf.model.in_dim == sum(cfg["channels"]) and clf.spec.rgb_window == 3
    pred = clf.predict_tensor(_images(1, 64, 64)[0])
    assert pred.labels.shape == (64, 64)
    capsys.readouterr()
    assert main(["evaluate", "--classifier", str(out), "--data", str(synth_data), "--cache-dir",
                 str(tmp_path / "cache"), "--json", str(tmp_path / "m.json")]) == 0
    assert 0.0 <= json.loads((tmp_path / "m.json").read_text())["miou"] <= 1.0


@pytest.mark.parametrize("value,message", [("4", "must be 0 or odd (a window centred on the pixel), got 4"),
                                           ("11", "must be at most 9 (3·K² channels per pixel), got 11")])
def test_cli_refuses_a_bad_window(value: str, message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--run", "r", "--data", "d", "--out", "o", "--rgb-window", value])
    assert f"argument --rgb-window: {message}" in capsys.readouterr().err
