"""Property-based: mutate classes.json, split.json, a run's and a classifier's config.json (types, ranges,
missing and extra keys, encodings, NaN) and load them as the CLI does. Every outcome must be success or a
one-line UserError/OSError that names the file: no other exception (a traceback), no NaN in what loaded,
and nothing written anywhere (loading is read-only).
"""
from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import USER_ERRORS

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.sampled_from([0, 1, -1, 2, 255, 256, 4096])
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6)
           | st.sampled_from(["", "32", "1", "a\nb", "\x00", "é"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                                          max_size=3), max_leaves=6)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a JSON document (dict keys and list indices), the root excluded."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out += [prefix + (k,)] + _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += [prefix + (i,)] + _paths(v, prefix + (i,))
    return out


def _parent(doc: Any, path: tuple) -> Any:
    for k in path[:-1]:
        doc = doc[k]
    return doc


@st.composite
def mutated(draw: st.DrawFn, original: dict) -> bytes:
    """The bytes of `original` after one random mutation: replace, delete or add a key, or re-encode."""
    doc = json.loads(json.dumps(original))
    op = draw(st.sampled_from(["replace", "replace", "delete", "add", "encoding"]))
    paths = _paths(doc)
    if op == "replace" and paths:
        path = draw(st.sampled_from(paths))
        _parent(doc, path)[path[-1]] = draw(VALUES)
    elif op == "delete" and paths:
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        del parent[path[-1]]
    elif op == "add":
        dicts = [()] + [p for p in paths if isinstance(_parent(doc, p + ("x",)), dict)]
        where = draw(st.sampled_from(dicts))
        _parent(doc, where + ("x",))[draw(st.text(min_size=1, max_size=5))] = draw(VALUES)
    text = json.dumps(doc)  # NaN / Infinity are written as such: not JSON, must be refused
    if op == "encoding":
        kind = draw(st.sampled_from(["latin-1", "utf-16", "garbage", "truncate", "bom"]))
        if kind == "garbage":
            return draw(st.binary(min_size=1, max_size=40))
        if kind == "truncate":
            return text.encode()[: draw(st.integers(0, max(0, len(text) - 1)))]
        if kind == "bom":
            return b"\xef\xbb\xbf" + text.encode()
        return text.replace('"', '"\u00e9', 1).encode(kind, errors="replace")
    return text.encode()


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _finite(node: Any) -> bool:
    if isinstance(node, float):
        return math.isfinite(node)
    if isinstance(node, dict):
        return all(_finite(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return all(_finite(v) for v in node)
    return True


def _check(target: Path, data: bytes, root: Path, load: Callable[[], Any], check_ok: Callable[[Any], None]) -> None:
    """Write `data` to target, load, and judge the outcome; the original file is restored afterwards."""
    original = target.read_bytes()
    target.write_bytes(data)
    before = _snapshot(root)
    try:
        try:
            result = load()
        except USER_ERRORS as e:
            msg = str(e)
            assert "\n" not in msg and "\r" not in msg, msg
            assert target.name in msg or str(target.parent) in msg, (target, msg)
        else:
            check_ok(result)
        after = _snapshot(root)
        assert after == {**before, str(target): after.get(str(target))}, "a load wrote files"
    finally:
        target.write_bytes(original)


@pytest.fixture(scope="module")
def prop_root(tmp_path_factory: pytest.TempPathFactory, rel_data: Path, rel_run: Path, rel_clf: Path) -> Path:
    root = tmp_path_factory.mktemp("prop")
    shutil.copytree(rel_data, root / "data")
    shutil.copytree(rel_run, root / "run")
    shutil.copytree(rel_clf, root / "clf")
    meta = json.loads((root / "clf" / "config.json").read_text())
    meta["run"] = "../run"
    (root / "clf" / "config.json").write_text(json.dumps(meta))
    return root


def _data_ok(ds: Any) -> None:
    assert ds.classes.num_classes >= 1 and all(_finite(list(c.color)) for c in ds.classes)
    assert not set(ds.stems("test")) & set(ds.stems("unlabeled")) and not set(ds.stems("test")) & set(ds.stems("train"))


def test_mutated_classes_json(prop_root: Path, rel_data: Path) -> None:
    from engine.data.folder import FolderDataset

    target = prop_root / "data" / "classes.json"

    @SETTINGS
    @given(data=mutated(json.loads((rel_data / "classes.json").read_text())))
    def run(data: bytes) -> None:
        _check(target, data, prop_root, lambda: FolderDataset(prop_root / "data"), _data_ok)

    run()


def test_mutated_split_json(prop_root: Path, rel_data: Path) -> None:
    from engine.data.folder import FolderDataset

    target = prop_root / "data" / "split.json"

    @SETTINGS
    @given(data=mutated(json.loads((rel_data / "split.json").read_text())))
    def run(data: bytes) -> None:
        _check(target, data, prop_root, lambda: FolderDataset(prop_root / "data"), _data_ok)

    run()


def test_mutated_run_config(prop_root: Path, rel_run: Path) -> None:
    from engine.models.run import load_run

    target = prop_root / "run" / "config.json"

    def ok(run: Any) -> None:
        assert _finite(run.unet_config.to_dict()) and _finite(run.diffusion_config.to_dict())
        assert run.diffusion.num_timesteps >= 1 and len(run.weights_hash) == 64

    @SETTINGS
    @given(data=mutated(json.loads((rel_run / "config.json").read_text())))
    def run(data: bytes) -> None:
        _check(target, data, prop_root, lambda: load_run(prop_root / "run", "cpu"), ok)

    run()


def test_mutated_classifier_config(prop_root: Path) -> None:
    from engine.segmentation.classifier import load_classifier

    target = prop_root / "clf" / "config.json"

    def ok(clf: Any) -> None:
        assert _finite(clf.fit_config.to_dict()) and _finite(clf.spec.to_dict()) and clf.classes.num_classes >= 1

    @SETTINGS
    @given(data=mutated(json.loads(target.read_text())))
    def run(data: bytes) -> None:
        _check(target, data, prop_root, lambda: load_classifier(prop_root / "clf", "cpu", use_cache=False), ok)

    run()
