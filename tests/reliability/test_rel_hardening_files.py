"""Issue 10 items 1, 3, 4: the feature cache stays inside its folder, keeps foreign folder modes, and outputs
get the umask's normal file mode."""
from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from engine import atomic
from engine.segmentation.feature_cache import FeatureCache


# ---- item 1: cache rows pointing outside the cache are never read, written or deleted ------------------
def _inject_row(cache_dir: Path, key: str, filename: str, size: int = 3_000_000_000) -> None:
    con = sqlite3.connect(cache_dir / "cache.db")
    now = time.time()
    con.execute("INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count, tag, size, mode,"
                " filename, value) VALUES (?, 1, ?, NULL, ?, 0, NULL, ?, 2, ?, NULL)",
                (key, now - 100, now - 100, size, filename))
    con.commit()
    con.close()


def _victims(tmp_path: Path) -> dict[str, Path]:
    outside = tmp_path / "home" / "u"
    outside.mkdir(parents=True)
    victims = {}
    for name in ("thesis.tex", "notes.txt", "linked.val", "viadir.val"):
        victims[name] = outside / name
        victims[name].write_text(f"precious {name}")
    return victims


def test_cache_rows_outside_the_directory_are_dropped_never_followed(tmp_path: Path, caplog) -> None:
    cache_dir = tmp_path / "run" / "feature_cache"
    victims = _victims(tmp_path)
    first = FeatureCache(cache_dir, size_limit=50_000)
    first.set("good", np.zeros(10, np.float16))
    first.close()
    os.symlink(victims["linked.val"], cache_dir / "link.val")  # a row file that is a symlink out of the cache
    os.symlink(victims["viadir.val"].parent, cache_dir / "zz")  # a sub-directory that is a symlink out
    rows = {"abs": str(victims["thesis.tex"]), "up": os.path.relpath(victims["notes.txt"], cache_dir),
            "link": "link.val", "dir": "zz/viadir.val"}
    for key, filename in rows.items():
        _inject_row(cache_dir, key, filename)

    cache = FeatureCache(cache_dir, size_limit=50_000)
    with caplog.at_level(logging.WARNING, logger="engine.segmentation.feature_cache"):
        for key in rows:  # lookups of the hostile rows: misses, targets untouched
            assert cache.get(key) is None
        for i in range(8):  # writes past the size limit: eviction runs
            cache.set(f"new{i}", np.ones(4000, np.float16))
        assert cache.get("new7") is not None
        cache.clear()
    cache.close()
    for name, path in victims.items():
        assert path.read_text() == f"precious {name}", name
    assert (tmp_path / "home" / "u").is_dir()
    con = sqlite3.connect(cache_dir / "cache.db")
    names = [r[0] for r in con.execute("SELECT filename FROM Cache WHERE filename IS NOT NULL")]
    con.close()
    assert not set(names) & set(rows.values())
    warned = "\n".join(r.getMessage() for r in caplog.records)
    for filename in rows.values():
        assert repr(filename) in warned, (filename, warned)


def test_cache_never_writes_through_a_symlinked_sub_directory(tmp_path: Path, monkeypatch) -> None:
    cache_dir = tmp_path / "cache"
    outside = tmp_path / "outside"
    outside.mkdir()
    cache = FeatureCache(cache_dir)
    cache.set("warm", np.zeros(3, np.float16))
    cache.close()
    # every sub-directory diskcache could pick (two hex levels) leads out of the cache
    for a in "0123456789abcdef":
        for b in "0123456789abcdef":
            sub = cache_dir / f"{a}{b}"
            if not sub.exists():
                os.symlink(outside, sub)
    cache = FeatureCache(cache_dir)
    for i in range(5):
        cache.set(f"k{i}", np.ones(40_000, np.float16))  # 80 kB > the 32 kB diskcache keeps inline: a file
    cache.close()
    assert not any(outside.rglob("*")), list(outside.rglob("*"))


# ---- item 3: --cache-dir never changes the mode of a directory it did not create -----------------------
def test_cache_dir_keeps_mode_of_existing_directory_and_creates_private_ones(tmp_path: Path) -> None:
    shared = tmp_path / "group_shared"
    shared.mkdir()
    os.chmod(shared, 0o2775)
    FeatureCache(shared).set("k", np.zeros(2, np.float16))
    assert stat.S_IMODE(shared.stat().st_mode) == 0o2775

    new = tmp_path / "fresh" / "deeper" / "cache"
    FeatureCache(new).set("k", np.zeros(2, np.float16))
    for d in (tmp_path / "fresh", tmp_path / "fresh" / "deeper", new):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


# ---- item 4: atomic writes give the mode the umask gives a normal file -----------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_outputs_get_the_umask_mode(tmp_path: Path, umask: int) -> None:
    from engine.data.images import save_png_atomic

    old = os.umask(umask)
    try:
        atomic.write_bytes_atomic(tmp_path / "a.bin", b"x")
        atomic.write_json_atomic(tmp_path / "b.json", {"x": 1})
        atomic.torch_save_atomic({"w": 1}, tmp_path / "c.pt")
        save_png_atomic(tmp_path / "d.png", np.zeros((2, 2), np.uint8))
        with open(tmp_path / "plain", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert want == 0o666 & ~umask
    for name in ("a.bin", "b.json", "c.pt", "d.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name


def test_segment_outputs_are_group_readable_under_umask_022(tmp_path: Path, rel_clf: Path, capsys) -> None:
    from PIL import Image

    from rel_helpers import cli

    img = tmp_path / "f.png"
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(img)
    old = os.umask(0o022)
    try:
        res = cli(capsys, "segment", "--classifier", rel_clf, img, "--out", tmp_path / "seg", "--no-cache")
    finally:
        os.umask(old)
    assert res.returncode == 0, res.stderr
    for p in (tmp_path / "seg").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
