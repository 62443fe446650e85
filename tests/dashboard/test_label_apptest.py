"""The Label page through AppTest on the embedded default (no unlabelled frames): it explains, and its
practice-copy button makes a labelling copy and selects it, after which frames are suggested."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest


def test_label_page_practice_copy(dashboard_env: dict[str, str], app_path: Path) -> None:
    at = AppTest.from_file(str(app_path), default_timeout=180)
    at.run()
    at.switch_page("app_pages/label.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("no unlabelled frames to suggest" in i.value for i in at.info)
    at.button(key="label_practice").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.session_state["ws_mode"] == "Directories on disk"
    practice = Path(at.session_state["ws_data"])
    assert practice.is_relative_to(Path(dashboard_env["DIFFSEG_OUT"])) and (practice / "split.json").is_file()
    assert any(c.value.startswith("Why this frame") for c in at.caption)
    assert [b.label for b in at.button if b.key and b.key.startswith("label_cls_")][-1] == "5 · instrument"
