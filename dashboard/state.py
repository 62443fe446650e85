"""Shared dashboard state: the chosen workspace, cached loaders, palette helpers. UI glue only.

Models live behind st.cache_resource (eval mode, never mutated by a session); arrays and small
results behind st.cache_data keyed on paths + content hashes / mtimes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import torch

from engine import workspace as wsmod
from engine.workspace import Workspace

torch.set_num_threads(int(os.environ.get("DIFFSEG_THREADS", "1")))

WS_KEY = "workspace_choice"


def _mtime(p: Path | None, name: str = "") -> float:
    if p is None:
        return 0.0
    f = p / name if name else p
    return f.stat().st_mtime if f.exists() else 0.0


def workspace() -> Workspace:
    """The workspace chosen in the sidebar (embedded default unless the user typed directories)."""
    choice = st.session_state.get(WS_KEY, {})
    return wsmod.resolve(choice.get("root"), choice.get("run"), choice.get("data"), choice.get("classifier"))


def workspace_selector() -> Workspace:
    """Sidebar widget shared by all pages (lives in the entrypoint)."""
    with st.sidebar:
        st.subheader("Workspace")
        mode = st.radio("Source", ["Embedded default", "Directories on disk"], key="ws_mode",
                        help="The embedded default ships with the app; or point at a run / data set / classifier.")
        if mode == "Directories on disk":
            run = st.text_input("Run directory", key="ws_run", placeholder="path/to/RUN")
            data = st.text_input("Data set directory", key="ws_data", placeholder="path/to/DATA")
            clf = st.text_input("Classifier directory", key="ws_clf", placeholder="path/to/CLF")
            st.session_state[WS_KEY] = {"run": run or None, "data": data or None, "classifier": clf or None}
        else:
            st.session_state[WS_KEY] = {}
        ws = workspace()
        for label, p in (("run", ws.run), ("data", ws.data), ("classifier", ws.classifier)):
            st.caption(f"{':material/check_circle:' if p else ':material/warning:'} {label}: `{p.name if p else 'not found'}`")
    return ws


# ---- cached loaders --------------------------------------------------------------------------------
def _cache_dir(weights_hash: str) -> Path:
    """Feature-cache folder of a checkpoint: $DIFFSEG_CACHE_DIR or ~/.cache/diffseg-studio/features, per weights hash."""
    env = os.environ.get("DIFFSEG_CACHE_DIR")
    base = Path(env) if env else Path.home() / ".cache" / "diffseg-studio" / "features"
    return base / weights_hash[:16]


@st.cache_resource(max_entries=4, show_spinner="Loading diffusion model…")
def _load_run(path: str, mtime: float):  # noqa: ANN202
    from engine.run import load_run

    run = load_run(path)
    run.model.eval()
    return run


def load_run(ws: Workspace):  # noqa: ANN201
    if ws.run is None:
        return None
    return _load_run(str(ws.run), _mtime(ws.run, "ema.pt"))


@st.cache_resource(max_entries=4, show_spinner="Loading classifier…")
def _load_classifier(path: str, mtime: float, run_path: str | None, run_mtime: float):  # noqa: ANN202
    from engine.classifier import load_classifier
    from engine.models.checkpoint import CheckpointError

    run = _load_run(run_path, run_mtime) if run_path else None
    try:
        clf = load_classifier(path, run=run, use_cache=False)
    except CheckpointError:
        if run is None:
            raise
        clf = load_classifier(path, use_cache=False)  # fitted on another run: load its own
    clf.cache = _feature_cache(clf.run.weights_hash)  # the one cache object of this checkpoint
    clf.model.eval()
    return clf


def load_classifier(ws: Workspace):  # noqa: ANN201
    if ws.classifier is None:
        return None
    return _load_classifier(str(ws.classifier), _mtime(ws.classifier, "weights.pt"),
                            str(ws.run) if ws.run else None, _mtime(ws.run, "ema.pt"))


@st.cache_resource(max_entries=4, show_spinner=False)
def _load_familiarity(run_path: str, fam_mtime: float, _run: Any) -> tuple:
    from engine.uncertainty.familiarity import load_for_run

    return load_for_run(_run)


def load_familiarity(run: Any) -> tuple:
    """(the run's familiarity model or None, why not), shared read-only; reloaded when the file changes."""
    from engine.uncertainty.familiarity import model_path

    p = model_path(run.path)
    return _load_familiarity(f"{run.path}|{run.weights_hash}", p.stat().st_mtime if p.is_file() else 0.0, run)


@st.cache_resource(max_entries=2, show_spinner="Loading conditional diffusion model…")
def _load_conddiff(path: str, mtime: float):  # noqa: ANN202
    from engine.methods.base import load_standalone

    return load_standalone(path)


def load_conddiff(ws: Workspace):  # noqa: ANN201
    """The workspace's fitted conditional-diffusion method, or None."""
    if ws.conddiff is None:
        return None
    return _load_conddiff(str(ws.conddiff), _mtime(ws.conddiff, "weights.pt"))


@st.cache_resource(max_entries=2, show_spinner="Loading the compared methods…")
def _load_compared(compare_path: str, mtime: float, shipped: str | None, data_path: str, size: int,
                   run_path: str | None, run_mtime: float) -> dict:
    from engine import compare_report

    report = wsmod.read_json(compare_path)
    dirs = compare_report.method_dirs(report, Path(shipped) if shipped else None, Path(compare_path).parent)
    ds = _load_dataset(data_path, _mtime(Path(data_path), "classes.json"))
    run = _load_run(run_path, run_mtime) if run_path else None
    return compare_report.load_methods(dirs, ds.classes, size, run)  # loaded methods are in eval mode


def load_compared_methods(ws: Workspace, size: int) -> dict:
    """The fitted methods behind the workspace's compare report that load here (shared, read-only)."""
    if ws.compare is None or ws.data is None:
        return {}
    shipped = ws.root / "demo_methods" if ws.root and (ws.root / "demo_methods").is_dir() else None
    return _load_compared(str(ws.compare), _mtime(ws.compare), str(shipped) if shipped else None, str(ws.data),
                          size, str(ws.run) if ws.run else None, _mtime(ws.run, "ema.pt"))


@st.cache_data(max_entries=256, show_spinner=False)
def _method_prediction(compare_path: str, mtime: float, name: str, data_path: str, stem: str, size: int,
                       _methods: dict) -> dict:
    from engine import compare_report, explore

    ds = _load_dataset(data_path, _mtime(Path(data_path), "classes.json"))
    return compare_report.frame_prediction(_methods[name], explore.model_input(ds, stem, size))


def method_prediction(ws: Workspace, size: int, name: str, data_path: str, stem: str) -> dict:
    """A compared method's mask (and conddiff's variance) for one data-set frame, cached per frame."""
    methods = load_compared_methods(ws, size)
    return _method_prediction(str(ws.compare), _mtime(ws.compare), name, data_path, stem, size, methods)


def feature_cache(run: Any):  # noqa: ANN201
    """The shared on-disk feature cache of a run's checkpoint (one object per checkpoint and server)."""
    return _feature_cache(run.weights_hash)


@st.cache_resource(max_entries=4)
def _feature_cache(weights_hash: str):  # noqa: ANN202
    from engine.feature_cache import FeatureCache

    return FeatureCache(_cache_dir(weights_hash))


@st.cache_resource(max_entries=4)
def _load_dataset(path: str, mtime: float):  # noqa: ANN202
    from engine.data.folder import FolderDataset

    return FolderDataset(path)


def load_dataset(ws: Workspace):  # noqa: ANN201
    if ws.data is None:
        return None
    return _load_dataset(str(ws.data), _mtime(ws.data, "classes.json"))


@st.cache_data(max_entries=8, show_spinner=False)
def dataset_summary(path: str, mtime: float) -> dict[str, Any]:
    return wsmod.dataset_summary(path)


@st.cache_data(max_entries=64, show_spinner=False)
def frame(data_path: str, stem: str) -> np.ndarray:
    """uint8 RGB of a data-set frame."""
    ds = _load_dataset(data_path, _mtime(Path(data_path), "classes.json"))
    return (np.clip(ds.image(stem), 0, 1) * 255).round().astype(np.uint8)


@st.cache_data(max_entries=64, show_spinner=False)
def truth(data_path: str, stem: str) -> np.ndarray | None:
    ds = _load_dataset(data_path, _mtime(Path(data_path), "classes.json"))
    return ds.mask(stem) if ds.has_mask(stem) else None


def need(ws: Workspace, *parts: str) -> bool:
    """Show a friendly note and return False when a workspace part is missing."""
    missing = [p for p in parts if getattr(ws, p) is None]
    if missing:
        st.info(f"This page needs a {', '.join(missing)} in the workspace. Choose directories in the sidebar, "
                "or create one on the **Train** page.")
        return False
    return True


def legend_html(classes: Any) -> str:
    """Class legend as coloured chips (one palette: the class table)."""
    chips = "".join(
        f"<span style='display:inline-block;margin:2px 8px 2px 0'><span style='display:inline-block;width:14px;"
        f"height:14px;border-radius:3px;vertical-align:middle;background:rgb{tuple(c.color)};border:1px solid #888'>"
        f"</span> {c.name}</span>" for c in classes)
    return f"<div data-testid='class-legend'>{chips}</div>"


@st.cache_resource
def result_store(name: str) -> dict:
    """A process-wide dict for fitted objects (small LRU managed by the page; never holds uploads)."""
    return {}
