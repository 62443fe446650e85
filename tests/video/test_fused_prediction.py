"""The fused ensemble prediction (one matmul per layer for all members, row bands) equals the previous path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.segmentation.pixel_classifier import EnsembleMLP, summarise, summarise_batch

REPO = Path(__file__).resolve().parents[2]


def _model(d: int, c: int = 5, members: int = 6, hidden=(16, 8)) -> EnsembleMLP:
    model = EnsembleMLP(d, c, hidden, members, seed=3)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        for norm in model.norms:
            norm.running_mean.copy_(torch.randn(norm.running_mean.shape, generator=g) * 0.1)
            norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize("hidden", [(16, 8), (12, 10, 6)])
@pytest.mark.parametrize("out_hw,chunk", [((16, 16), None), ((30, 22), 2), ((17, 41), 4)])
def test_fused_equals_unfused(out_hw, chunk, hidden) -> None:
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 4, 4), (3, 8, 8), (6, 4, 4), (2, 16, 16)]  # two maps share 4×4: one convolution for both
    maps = [torch.randn(3, *s, generator=g) for s in shapes]
    model = _model(sum(s[0] for s in shapes), hidden=hidden)
    batch = model.predict_logits_batch(maps, out_hw, member_chunk=chunk)
    assert batch.shape == (3, 6, 5, *out_hw)
    for n in range(3):
        ref = model.predict_logits_unfused([m[n] for m in maps], out_hw)
        torch.testing.assert_close(batch[n], ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.predict_logits([m[n] for m in maps], out_hw), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("band_rows", [1, 4, 8, 12, 64])
@pytest.mark.parametrize("out_hw", [(16, 20), (32, 12)])
def test_banded_head_equals_unfused(out_hw, band_rows) -> None:
    """Row bands (native rows + one context row each side, upsampled and trimmed) equal the whole frame."""
    g = torch.Generator().manual_seed(2)
    H, W = out_hw
    # factors 4, 2, 1 (rows) and maps at the output size (the RGB window), whose product is added band by band
    shapes = [(4, H // 4, W // 4), (3, H // 2, W // 2), (2, H // 4, W // 4), (5, H, W // 2), (3, H, W), (2, H, W)]
    maps = [torch.randn(2, *s, generator=g) for s in shapes]
    model = _model(sum(s[0] for s in shapes))
    for k in range(2):
        got = model._fused_members([m[k:k + 1] for m in maps], out_hw, slice(None), band_rows=band_rows)[0]
        ref = model.predict_logits_unfused([m[k] for m in maps], out_hw)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    both = model.predict_logits_batch(maps, out_hw, image_chunk=2)  # two images per band: strided slices
    torch.testing.assert_close(both[1], model.predict_logits_unfused([m[1] for m in maps], out_hw),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bf16", [False, True])
def test_head_of_output_size_maps_only(bf16: bool) -> None:
    """No map to upsample (every map at the output size): the bias rides on the output-size product."""
    g = torch.Generator().manual_seed(5)
    maps = [torch.randn(2, 4, 12, 10, generator=g), torch.randn(2, 3, 12, 10, generator=g)]
    model = _model(7)
    got = model._fused_members(maps, (12, 10), slice(None), bf16=bf16, band_rows=4)
    for k in range(2):
        ref = model.predict_logits_unfused([m[k] for m in maps], (12, 10))
        tol = 0.02 * float(ref.abs().max()) if bf16 else 1e-5
        torch.testing.assert_close(got[k], ref, atol=tol, rtol=0 if bf16 else 1e-5)


def test_bands_cover_the_frame_in_whole_factors() -> None:
    from engine.segmentation.pixel_classifier import _bands

    z = [torch.zeros(1, 1, 8, 3), torch.zeros(1, 1, 12, 3)]  # factors 3 and 2 of H = 24: bands of 6
    assert _bands(z, 24, 8) == [(0, 6), (6, 12), (12, 18), (18, 24)]
    assert _bands(z, 24, 13) == [(0, 12), (12, 24)]
    assert _bands([torch.zeros(1, 1, 5, 3)], 24, 8) == [(0, 24)]  # 5 does not divide 24: one band


def test_bf16_head_close_to_float32() -> None:
    g = torch.Generator().manual_seed(6)
    maps = [torch.randn(2, 8, 6, 8, generator=g), torch.randn(2, 8, 12, 16, generator=g)]
    model = _model(16, hidden=(32, 8))
    ref = model.predict_logits_batch(maps, (24, 32))
    got = model.predict_logits_batch(maps, (24, 32), bf16=True)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert float((got - ref).abs().max()) < 0.02 * float(ref.abs().max())  # bf16: 8-bit mantissa
    agree = float((summarise_batch(got)[0].argmax(1) == summarise_batch(ref)[0].argmax(1)).float().mean())
    assert agree >= 0.99, agree


def test_summarise_batch_equals_summarise() -> None:
    logits = torch.randn(3, 4, 5, 9, 7, generator=torch.Generator().manual_seed(1)) * 3
    probs, js, score = summarise_batch(logits)
    for n in range(3):
        ref = summarise(logits[n])
        torch.testing.assert_close(probs[n], ref.probs)
        torch.testing.assert_close(js[n], ref.js)
        assert float(score[n]) == pytest.approx(ref.score, rel=1e-6)


@pytest.mark.skipif(not (REPO / "assets/demo_classifier/weights.pt").is_file(), reason="demo assets absent")
def test_demo_classifier_fused_batched_path_equals_todays_path() -> None:
    """Real features of the shipped classifier: batched UNet + fused head vs per-frame features + unfused head."""
    from engine.segmentation.classifier import load_classifier
    from engine.data.images import load_image
    from engine.data.transforms import resize_shorter, to_tensor

    clf = load_classifier(REPO / "assets/demo_classifier", "cpu", use_cache=False)
    images = []
    for stem in ("synth_00020", "synth_00021", "synth_00022"):
        img = load_image(REPO / f"assets/demo_data/images/{stem}.png")
        img = np.concatenate([img, img[:, :40]], axis=1)  # not square: 128×168
        images.append(to_tensor(resize_shorter(img, clf.run.image_size, clf.run.model.downsample_factor)[0]))
    ext = clf.extractor()
    stacked = ext.compute_batch(torch.stack(images))
    hw = tuple(images[0].shape[-2:])
    fused = summarise_batch(clf.model.predict_logits_batch(stacked, hw))[0].argmax(1)
    fused_bf16 = summarise_batch(clf.model.predict_logits_batch(stacked, hw, bf16=True))[0].argmax(1)
    agree, agree_bf16 = [], []
    for n, img in enumerate(images):
        maps = ext(img)  # today's path: one image, all t in one batch
        for a, b in zip(maps, stacked):
            torch.testing.assert_close(a, b[n], atol=2e-3, rtol=2e-3)  # float16-rounded activations
        ref = summarise(clf.model.predict_logits_unfused(maps, hw)).labels
        agree.append(float((ref == fused[n]).float().mean()))
        agree_bf16.append(float((ref == fused_bf16[n]).float().mean()))
    assert min(agree) >= 0.999, agree
    assert min(agree_bf16) >= 0.999, agree_bf16  # the bar for a faster path


def test_summarise_batch_applies_the_temperature_like_summarise() -> None:
    """Video and frame paths report the same calibrated probabilities; the argmax and JS stay the raw ones."""
    logits = torch.randn(2, 4, 5, 6, 7, generator=torch.Generator().manual_seed(2)) * 3
    raw = summarise_batch(logits)[0]
    for t in (0.4, 2.5):
        probs, js, score = summarise_batch(logits, temperature=t)
        for n in range(2):
            ref = summarise(logits[n], temperature=t)
            torch.testing.assert_close(probs[n], ref.probs)
            torch.testing.assert_close(js[n], ref.js)
            assert float(score[n]) == pytest.approx(ref.score, rel=1e-6)
        # naive reference: softmax(log mean / T) over classes
        torch.testing.assert_close(probs, torch.softmax(raw.clamp_min(1e-12).log() / t, dim=1))
        assert (probs.argmax(1) == raw.argmax(1)).all()
        assert not torch.allclose(probs, raw, atol=1e-3)
