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

from engine.app import access, workspace as wsmod
from engine.app.workspace import Workspace

torch.set_num_threads(int(os.environ.get("DIFFSEG_THREADS", "1")))

WS_KEY = "workspace_choice"
#: the device every model of this server runs on (the dashboard's edge default: the CPU; $DIFFSEG_DEVICE)
DEVICE = os.environ.get("DIFFSEG_DEVICE", "cpu")


def _mtime(p: Path | None, name: str = "") -> float:
    if p is None:
        return 0.0
    f = p / name if name else p
    return f.stat().st_mtime if f.exists() else 0.0


def policy() -> access.AccessPolicy:
    """Allowed folders and public mode ($DIFFSEG_PATH_ROOT, $DIFFSEG_PUBLIC), read per rerun."""
    return access.policy_from_env()


def workspace() -> Workspace:
    """The workspace chosen in the sidebar (embedded default unless the user typed directories)."""
    choice = st.session_state.get(WS_KEY, {})
    return wsmod.resolve(choice.get("root"), choice.get("run"), choice.get("data"), choice.get("classifier"))


def is_embedded_demo(ws: Workspace) -> bool:
    """True when the workspace's run is the shipped synthetic demo's."""
    return ws.run is not None and ws.run.resolve() == (wsmod.REPO_ROOT / "assets" / "demo_run").resolve()


def demo_notice(ws: Workspace) -> None:
    """Say what the embedded default is (Overview, Segment)."""
    if is_embedded_demo(ws):
        st.warning("**Embedded default: a synthetic 64-px research demo, not for clinical use.** The frames are "
                   "rendered cataract scenes and the diffusion model was trained for 82 minutes on 2 CPU cores; "
                   "point the sidebar at your own run, data set and classifier for real work.",
                   icon=":material/science:")


def use_workspace(run: str | None = None, data: str | None = None, classifier: str | None = None) -> None:
    """Switch the sidebar to these directories on the next run (empty parts keep what is typed there).

    Safe from anywhere (callbacks, after the sidebar was drawn): the change is applied by workspace_selector
    before its widgets exist; call st.rerun() afterwards when not in a callback.
    """
    st.session_state["ws_pending"] = {"ws_run": run, "ws_data": data, "ws_clf": classifier}


def _apply_pending() -> None:
    pending = st.session_state.pop("ws_pending", None)
    if pending:
        st.session_state["ws_mode"] = "Directories on disk"
        for key, value in pending.items():
            if value:
                st.session_state[key] = str(value)


_PARTS = (("run", "Run directory", "ws_run", "demo_run"), ("data", "Data set directory", "ws_data", "demo_data"),
          ("classifier", "Classifier directory", "ws_clf", "demo_classifier"))


def workspace_selector() -> Workspace:
    """Sidebar widget shared by all pages (lives in the entrypoint). Typed paths are confined (engine.app.access)."""
    pol = policy()
    _apply_pending()
    with st.sidebar:
        st.subheader("Workspace")
        if pol.public:
            st.session_state[WS_KEY] = {}
            st.caption(":material/public: Public demo mode: the embedded default and your uploads only; jobs and "
                       "directories on disk are off.")
        else:
            mode = st.radio("Source", ["Embedded default", "Directories on disk"], key="ws_mode",
                            help="The embedded default ships with the app; or point at a run / data set / classifier "
                                 f"inside `{pol.root}`.")
            choice: dict[str, str | None] = {}
            if mode == "Directories on disk":
                for part, label, key, default in _PARTS:
                    text = st.text_input(label, key=key, placeholder=f"empty = embedded {default}")
                    if not text.strip():
                        st.caption(f"Empty: falls back to the embedded default `{default}`.")
                        choice[part] = None
                        continue
                    try:
                        choice[part] = str(pol.check(text, label))
                    except access.PathRefused as e:
                        st.error(str(e), icon=":material/block:")
                        choice[part] = None
            st.session_state[WS_KEY] = choice
        ws = workspace()
        for label, p in (("run", ws.run), ("data", ws.data), ("classifier", ws.classifier)):
            st.caption(f"{':material/check_circle:' if p else ':material/warning:'} {label}: `{p.name if p else 'not found'}`")
    return ws


LAYOUT_CSS = """<style>
/* metric labels and values wrap instead of being cut with an ellipsis ("Train (label…") */
[data-testid="stMetricLabel"] *, [data-testid="stMetricValue"] * {white-space: normal !important;
  overflow: visible !important; text-overflow: clip !important; overflow-wrap: normal !important;}
[data-testid="stMetricValue"] {font-size: 1.9rem;}
[data-testid="stWidgetLabel"] * {white-space: normal !important; overflow-wrap: normal !important;}
/* narrower screens: a slimmer sidebar and main padding, so the page keeps its width for content */
@media (max-width: 1200px) {
  section[data-testid="stSidebar"] {width: 236px !important; min-width: 236px !important;}
  [data-testid="stMainBlockContainer"] {padding-left: 1.2rem !important; padding-right: 1.2rem !important;}
  [data-testid="stMetricValue"] {font-size: 1.5rem;}
}
</style>"""


def text_table(rows: list[dict[str, Any]], formats: dict[str, str], default: str = ".3f") -> list[dict[str, str]]:
    """Rows with every number formatted (`formats` per column, else `default`) and missing values as "–":
    a number column holding None shows "None" in st.dataframe, which reads like a bug."""
    def cell(col: str, v: Any) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "–"
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            fmt = formats.get(col, default)
            return f"{v:{fmt}}" if fmt != "%" else f"{v:.0%}"
        return str(v)

    return [{k: cell(k, v) for k, v in r.items()} for r in rows]


def layout_css() -> None:
    """Inject the layout fixes once per run (entrypoint)."""
    st.html(LAYOUT_CSS)


# ---- cached loaders --------------------------------------------------------------------------------
@st.cache_resource(max_entries=4, show_spinner="Loading diffusion model…")
def _load_run(path: str, mtime: float):  # noqa: ANN202
    from engine.models.run import load_run

    run = load_run(path, DEVICE)
    run.model.eval()
    return run


def load_run(ws: Workspace):  # noqa: ANN201
    if ws.run is None:
        return None
    return _load_run(str(ws.run), _mtime(ws.run, "ema.pt"))


@st.cache_resource(max_entries=4, show_spinner="Loading classifier…")
def _load_classifier(path: str, mtime: float, run_path: str | None, run_mtime: float):  # noqa: ANN202
    from engine.segmentation.classifier import load_classifier
    from engine.models.checkpoint import CheckpointError

    run = _load_run(run_path, run_mtime) if run_path else None
    try:
        clf = load_classifier(path, DEVICE, run=run, use_cache=False)
    except CheckpointError:
        if run is None:
            raise
        clf = load_classifier(path, DEVICE, use_cache=False)  # fitted on another run: load its own
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

    return load_standalone(path, DEVICE)


def load_conddiff(ws: Workspace):  # noqa: ANN201
    """The workspace's fitted conditional-diffusion method, or None."""
    if ws.conddiff is None:
        return None
    return _load_conddiff(str(ws.conddiff), _mtime(ws.conddiff, "weights.pt"))


@st.cache_resource(max_entries=2, show_spinner="Loading the compared methods…")
def _load_compared(compare_path: str, mtime: float, shipped: str | None, data_path: str, size: int,
                   run_path: str | None, run_mtime: float) -> dict:
    from engine.methods import compare_report

    report = wsmod.read_json(compare_path)
    dirs = compare_report.method_dirs(report, Path(shipped) if shipped else None, Path(compare_path).parent)
    ds = _load_dataset(data_path, _mtime(Path(data_path), "classes.json"))
    run = _load_run(run_path, run_mtime) if run_path else None
    return compare_report.load_methods(dirs, ds.classes, size, DEVICE, run)  # loaded methods are in eval mode


def load_compared_methods(ws: Workspace, size: int) -> dict:
    """The fitted methods behind the workspace's compare report that load here (shared, read-only)."""
    if ws.compare is None or ws.data is None:
        return {}
    shipped = _shipped_methods(ws)
    return _load_compared(str(ws.compare), _mtime(ws.compare), str(shipped) if shipped else None, str(ws.data),
                          size, str(ws.run) if ws.run else None, _mtime(ws.run, "ema.pt"))


def _shipped_methods(ws: Workspace) -> Path | None:
    return ws.root / "demo_methods" if ws.root and (ws.root / "demo_methods").is_dir() else None


@st.cache_data(max_entries=4, show_spinner=False)
def _fingerprints(compare_path: str, mtime: float, shipped: str | None) -> dict[str, str]:
    from engine.methods import compare_cache, compare_report

    report = wsmod.read_json(compare_path)
    dirs = compare_report.method_dirs(report, Path(shipped) if shipped else None, Path(compare_path).parent)
    return {name: compare_cache.fingerprint(d) for name, d in dirs.items()}


def method_fingerprints(ws: Workspace) -> dict[str, str]:
    """name → content fingerprint of each fitted method behind the compare report that exists on disk."""
    if ws.compare is None:
        return {}
    shipped = _shipped_methods(ws)
    return _fingerprints(str(ws.compare), _mtime(ws.compare), str(shipped) if shipped else None)


@st.cache_resource(max_entries=2, show_spinner=False)
def _prediction_store(path: str, mtime: float):  # noqa: ANN202
    from engine.methods.compare_cache import PredictionStore

    return PredictionStore(path)


@st.cache_data(max_entries=256, show_spinner=False)
def _method_prediction(compare_path: str, mtime: float, name: str, data_path: str, stem: str, size: int,
                       _methods: dict) -> dict:
    from engine.methods import compare_report
    from engine.app import explore

    ds = _load_dataset(data_path, _mtime(Path(data_path), "classes.json"))
    return compare_report.frame_prediction(_methods[name], explore.model_input(ds, stem, size))


def method_prediction(ws: Workspace, size: int, name: str, data_path: str, stem: str) -> dict | None:
    """A compared method's mask (and conddiff's variance) for one data-set frame: from the precomputed store
    beside the report when it holds this method version and frame, else predicted once and cached."""
    from engine.methods.compare_cache import store_path

    fp = method_fingerprints(ws).get(name)
    if fp is not None and ws.compare is not None:
        sp = store_path(ws.compare)
        hit = _prediction_store(str(sp), _mtime(sp)).get(name, fp, stem)
        if hit is not None:
            return hit
    methods = load_compared_methods(ws, size)
    if name not in methods:
        return None
    return _method_prediction(str(ws.compare), _mtime(ws.compare), name, data_path, stem, size, methods)


def feature_cache(run: Any):  # noqa: ANN201
    """The shared on-disk feature cache of a run's checkpoint (one object per checkpoint and server)."""
    return _feature_cache(run.weights_hash)


@st.cache_resource(max_entries=4)
def _feature_cache(weights_hash: str):  # noqa: ANN202
    """The same directory the CLI uses (engine.segmentation.feature_cache.cache_dir_for), so each reuses the other's rows."""
    from engine.segmentation.feature_cache import FeatureCache, cache_dir_for

    return FeatureCache(cache_dir_for(weights_hash))


@st.cache_resource(max_entries=4)
def _load_dataset(path: str, mtime: float):  # noqa: ANN202
    from engine.data.folder import open_dataset

    return open_dataset(path)


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


def plotly_config(name: str) -> dict[str, Any]:
    """Chart toolbar that saves a high-resolution image client-side (no kaleido): 4× scale PNG or SVG."""
    return {"displaylogo": False, "toImageButtonOptions": {"format": "svg", "filename": name, "scale": 4}}


def legend_html(classes: Any) -> str:
    """Class legend as coloured chips (one palette: the class table)."""
    chips = "".join(
        f"<span style='display:inline-block;margin:2px 8px 2px 0'><span style='display:inline-block;width:14px;"
        f"height:14px;border-radius:3px;vertical-align:middle;background:rgb{tuple(c.color)};border:1px solid #888'>"
        f"</span> {c.name}</span>" for c in classes)
    return f"<div data-testid='class-legend'>{chips}</div>"


@st.cache_resource(max_entries=2, show_spinner="Loading the feature bank (train + scored test frames)…")
def _feature_bank(weights_hash: str, run_path: str, run_mtime: float, data_path: str, max_test: int):  # noqa: ANN202
    from engine.app.explore import FeatureBank

    run = _load_run(run_path, run_mtime)
    ds = _load_dataset(data_path, _mtime(Path(data_path), "classes.json"))
    return FeatureBank(run, ds, feature_cache(run), max_test)


def feature_bank(ws: Workspace, max_test: int):  # noqa: ANN201
    """In-memory features of the train frames and the first `max_test` test frames (Tune and Activations)."""
    run = load_run(ws)
    return _feature_bank(run.weights_hash, str(ws.run), _mtime(ws.run, "ema.pt"), str(ws.data), max_test)


@st.cache_resource
def result_store(name: str) -> dict:
    """A process-wide dict for fitted objects (small LRU managed by the page; never holds uploads)."""
    return {}
