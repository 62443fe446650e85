"""Feature extraction: one batched forward, early stop, native shapes, t-major order, shared eps, n_noise."""
from __future__ import annotations

import pytest
import torch

from engine.segmentation.features import FeatureExtractor, FeatureSpec, shared_noise


def _img(seed: int = 0, size: int = 32) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_all_timesteps_in_one_forward(tiny_run, count_calls) -> None:
    ext = FeatureExtractor(tiny_run, FeatureSpec((10, 200, 700), (1, 3)))
    first = count_calls(tiny_run.model.input_blocks[0])
    batch_sizes: list[int] = []
    h = tiny_run.model.input_blocks[0].register_forward_pre_hook(lambda m, a: batch_sizes.append(a[0].shape[0]))
    try:
        ext.compute(_img())
    finally:
        h.remove()
    assert first.n == 1 and batch_sizes == [3]


def test_stops_after_last_requested_block(tiny_run, count_calls) -> None:
    m = tiny_run.model
    later = [count_calls(m.output_blocks[i]) for i in (2, 3)] + [count_calls(m.out)]
    used = [count_calls(m.output_blocks[i]) for i in (0, 1)]
    FeatureExtractor(tiny_run, FeatureSpec((10, 300), (1, 0)))(_img())
    assert [c.n for c in later] == [0, 0, 0]
    assert [c.n for c in used] == [1, 1]


def test_native_shapes_match_block_shapes(tiny_run) -> None:
    blocks = tuple(range(len(tiny_run.model.output_blocks)))
    ext = FeatureExtractor(tiny_run, FeatureSpec((5, 50), blocks))
    maps = ext(_img())
    shapes = tiny_run.model.block_shapes(32)
    expected = [(shapes[b][0], shapes[b][1], shapes[b][1]) for _, b in ext.spec.keys]
    assert [tuple(f.shape) for f in maps] == expected
    assert ext.map_shapes(32, 32) == expected and sum(ext.channels) == sum(c for c, *_ in expected)
    # non-square input: native maps keep the aspect ratio
    rect = FeatureExtractor(tiny_run, FeatureSpec((5,), (0, 3)))(torch.rand(3, 32, 48) * 2 - 1)
    assert [tuple(f.shape) for f in rect] == [(64, 16, 24), (32, 32, 48)]


def test_t_major_then_block_order(tiny_run) -> None:
    img = _img(1)
    both = FeatureExtractor(tiny_run, FeatureSpec((10, 600), (3, 1))).compute(img)
    singles = [f for t in (10, 600) for f in FeatureExtractor(tiny_run, FeatureSpec((t,), (3, 1))).compute(img)]
    assert [tuple(f.shape) for f in both] == [(32, 32, 32), (64, 32, 32)] * 2
    for a, b in zip(both, singles):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(both[0], both[2], atol=1e-3)  # t matters


def test_one_eps_for_every_t_and_image(tiny_run, monkeypatch) -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    diff = tiny_run.diffusion
    orig = diff.q_sample

    def spy(x0, t, noise):
        xt = orig(x0, t, noise)
        seen.append((x0.clone(), t.clone(), xt.clone()))
        return xt

    monkeypatch.setattr(diff, "q_sample", spy)
    ext = FeatureExtractor(tiny_run, FeatureSpec((3, 250, 900), (1,), noise_seed=7))
    ext.compute(_img(0))
    ext.compute(_img(1))
    expected = shared_noise(7, (3, 32, 32))
    for x0, t, xt in seen:
        ab = torch.as_tensor(diff.alphas_cumprod, dtype=torch.float32)[t][:, None, None, None]
        eps = (xt - ab.sqrt() * x0) / (1 - ab).sqrt()  # invert x_t = sqrt(ab) x0 + sqrt(1-ab) eps
        for e in eps:
            torch.testing.assert_close(e, expected, atol=2e-4, rtol=1e-4)


def test_n_noise_is_the_mean_of_single_seed_runs(tiny_run) -> None:
    img = _img(2)
    avg = FeatureExtractor(tiny_run, FeatureSpec((40, 400), (1, 2), noise_seed=3, n_noise=3)).compute(img)
    runs = [FeatureExtractor(tiny_run, FeatureSpec((40, 400), (1, 2), noise_seed=s)).compute(img) for s in (3, 4, 5)]
    for i, a in enumerate(avg):
        torch.testing.assert_close(a, torch.stack([r[i] for r in runs]).mean(0), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(runs[0][0], runs[1][0], atol=1e-3)  # the seeds really differ


def test_bad_spec_errors(tiny_run) -> None:
    with pytest.raises(ValueError, match=r"0\.\.999"):
        FeatureExtractor(tiny_run, FeatureSpec((1000,), (1,)))
    with pytest.raises(ValueError, match=r"0\.\.3"):
        FeatureExtractor(tiny_run, FeatureSpec((10,), (4,)))
    with pytest.raises(ValueError, match="duplicate"):
        FeatureSpec((10, 10), (1,))
