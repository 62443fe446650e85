"""Feature cache: hits, checkpoint-keyed, corrupt / pickled / deleted / unwritable entries never hurt results."""
from __future__ import annotations

import os
import pickle
import shutil
import sqlite3
from pathlib import Path

import torch

from engine.segmentation.feature_cache import FeatureCache
from engine.segmentation.features import FeatureExtractor, FeatureSpec
from engine.models.run import load_run

SPEC = FeatureSpec((20, 300), (0, 2))


def _img(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _reference(run, img):
    return [f.half().float() for f in FeatureExtractor(run, SPEC).compute(img)]


def _assert_maps(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-3, rtol=1e-3)


def test_second_call_hits_without_running_the_unet(tiny_run, tmp_path, count_calls) -> None:
    cache = FeatureCache(tmp_path / "c")
    ext = FeatureExtractor(tiny_run, SPEC, cache)
    img = _img()
    first = ext(img)
    assert cache.stats()["misses"] == len(SPEC.keys) and cache.stats()["hits"] == 0
    calls = count_calls(tiny_run.model.input_blocks[0])
    second = ext(img)
    assert calls.n == 0
    assert cache.stats()["hits"] == len(SPEC.keys)
    _assert_maps(first, second)
    _assert_maps(second, _reference(tiny_run, img))
    assert oct(os.stat(cache.directory).st_mode & 0o777) == "0o700"


def test_other_checkpoint_never_gets_stale_features(tiny_run, other_run_dir, tmp_path, count_calls) -> None:
    cache_dir, img = tmp_path / "c", _img()
    a = FeatureExtractor(tiny_run, SPEC, FeatureCache(cache_dir))(img)
    other = load_run(other_run_dir, "cpu")
    assert other.weights_hash != tiny_run.weights_hash
    cache = FeatureCache(cache_dir)  # the same directory, shared by both checkpoints
    calls = count_calls(other.model.input_blocks[0])
    b = FeatureExtractor(other, SPEC, cache)(img)
    assert calls.n == 1 and cache.hits == 0
    _assert_maps(b, _reference(other, img))
    assert not torch.allclose(a[0], b[0], atol=1e-2)


def _value_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*.val")]


def test_corrupt_value_files_are_recomputed(tiny_run, tmp_path) -> None:
    cache, img = FeatureCache(tmp_path / "c"), _img(3)
    ext = FeatureExtractor(tiny_run, SPEC, cache)
    ext(img)
    files = _value_files(cache.directory)
    assert len(files) == len(SPEC.keys)  # maps are big enough to live in files
    for f in files:
        f.write_bytes(b"\x93NUMPY garbage" + os.urandom(50))
    again = ext(img)
    _assert_maps(again, _reference(tiny_run, img))
    assert cache.errors >= 1
    # the dropped entries were rewritten: the next call is all hits
    hits = cache.hits
    _assert_maps(ext(img), again)
    assert cache.hits == hits + len(SPEC.keys)


def test_row_switched_to_pickle_is_refused_and_recomputed(tiny_run, tmp_path) -> None:
    cache, img = FeatureCache(tmp_path / "c"), _img(4)
    ext = FeatureExtractor(tiny_run, SPEC, cache)
    ext(img)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = pickle.dumps(Evil())
    cache.close()
    with sqlite3.connect(cache.directory / "cache.db") as db:  # an attacker with write access to the cache dir
        db.execute("UPDATE Cache SET mode = 4, value = ?, filename = NULL", (payload,))
    got = ext(img)
    assert not marker.exists()
    _assert_maps(got, _reference(tiny_run, img))
    assert cache.errors >= len(SPEC.keys)


def test_cache_directory_deleted_mid_run(tiny_run, tmp_path) -> None:
    cache = FeatureCache(tmp_path / "c")
    ext = FeatureExtractor(tiny_run, SPEC, cache)
    ext(_img(5))
    shutil.rmtree(cache.directory)
    img = _img(6)
    _assert_maps(ext(img), _reference(tiny_run, img))
    _assert_maps(ext(_img(5)), _reference(tiny_run, _img(5)))


def test_unwritable_cache_still_gives_correct_features(tiny_run, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = FeatureCache(blocker / "cache")  # cannot be created under a regular file
    img = _img(7)
    _assert_maps(FeatureExtractor(tiny_run, SPEC, cache)(img), _reference(tiny_run, img))
    assert cache.errors >= 1 and cache.hits == 0


def test_cache_holds_the_same_values_whichever_path_filled_it(tiny_run_dir: Path, synth_data: Path,
                                                                tmp_path: Path) -> None:
    """The Tune page's feature bank and `__call__` (fit, segment) cache identical maps, so a fit never depends
    on what ran before it: batched UNet forwards round some values differently, so no cached path batches."""
    from engine.app.explore import FeatureBank
    from engine.data.folder import FolderDataset
    from engine.segmentation.classifier import FitConfig, fit_classifier

    run = load_run(tiny_run_dir, "cpu")
    ds = FolderDataset(synth_data)
    spec = FeatureSpec((10, 300), (1, 3))
    bank = FeatureBank(run, ds, FeatureCache(tmp_path / "filled"), max_test=1)
    filled = bank.maps("train", spec.steps, spec.block_list)  # a miss: the bank fills the cache (every block)
    for i, img in enumerate(bank.images["train"]):
        single = FeatureExtractor(run, spec)(img)  # no cache: the values __call__ would write
        one = FeatureExtractor(run, spec).compute_batch(img[None])
        for j, m in enumerate(single):
            assert torch.equal(filled[j][i].float(), m) and torch.equal(one[j][0], m)
    fit = FitConfig(members=2, max_epochs=1)
    after_bank = FeatureCache(tmp_path / "filled")
    after_fill = fit_classifier(run, ds, spec, fit, cache=after_bank)
    assert after_bank.hits > 0 and after_bank.misses == 0  # the fit really read what the bank cached
    fresh = fit_classifier(run, ds, spec, fit, cache=FeatureCache(tmp_path / "fresh"))
    assert after_fill.ensemble_digest() == fresh.ensemble_digest()
