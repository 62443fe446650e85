"""DiffSeg Studio dashboard entrypoint: `streamlit run dashboard/app.py`.

One file per page in dashboard/app_pages/ (UI only; every computation is an engine call).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard import state  # noqa: E402

st.set_page_config(page_title="DiffSeg Studio", page_icon=":material/biotech:", layout="wide")

pages = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("app_pages/samples.py", title="Samples", icon=":material/casino:"),
    st.Page("app_pages/activations.py", title="Activations", icon=":material/psychology:"),
    st.Page("app_pages/tune.py", title="Tune", icon=":material/tune:"),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("app_pages/segment.py", title="Segment", icon=":material/content_cut:"),
    st.Page("app_pages/video.py", title="Video", icon=":material/movie:"),
    st.Page("app_pages/label.py", title="Label", icon=":material/brush:"),
    st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
]
nav = st.navigation(pages)
state.workspace_selector()
nav.run()
