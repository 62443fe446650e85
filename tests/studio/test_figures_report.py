"""Publication figures (PNG / PDF / SVG), the method palette, the compare headline/table rows, the prediction
store and the self-contained HTML report."""
from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.methods import compare_cache, compare_report
from engine.outputs import palette
from engine.outputs.figures import ColourBar, PanelFigure, compose, frame_iou, render_pdf, render_png, render_svg
from helpers import REPO


def _figure() -> PanelFigure:
    rng = np.random.default_rng(0)
    panels = [[rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(3)] for _ in range(2)]
    return PanelFigure(panels, ["frame", "truth", "conditional diffusion uncertainty"], ["synth_00020", "synth_00021"],
                       [["", "", "IoU 0.700"], ["", "", "IoU 0.650"]], [("pupil", (255, 0, 0)), ("iris", (255, 105, 180))],
                       ColourBar("variance", 0.0, 0.25, "agree", "disagree"), title="Test frames")


def test_png_pdf_svg_are_high_resolution_and_carry_the_labels() -> None:
    fig = _figure()
    img = compose(fig)
    assert img.width >= 3 * 256 and img.height >= 2 * 256  # 64-px panels upscaled, not stretched thumbnails
    png = Image.open(io.BytesIO(render_png(fig, dpi=300)))
    assert png.size == img.size and round(png.info["dpi"][0]) == 300
    # the nearest-neighbour upscale keeps each source pixel as a 4×4 block
    from engine.outputs.figures import _cell_xy, _layout

    x, y = _cell_xy(_layout(fig), 1, 2)
    assert (np.asarray(img)[y:y + 4, x:x + 4] == fig.panels[1][2][0, 0]).all()
    assert (np.asarray(img)[y + 4, x] == fig.panels[1][2][1, 0]).all()
    assert render_pdf(fig).startswith(b"%PDF")
    svg = render_svg(fig)
    root = ET.fromstring(svg)  # well-formed XML
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    for label in ("frame", "truth", "synth_00020", "IoU 0.700", "pupil", "iris", "variance", "Test frames"):
        assert any(label in (t or "") for t in texts), label
    assert len(list(root.iter("{http://www.w3.org/2000/svg}image"))) == 6 + 1  # panels + colour bar
    assert "conditional diffusion" in " ".join(t or "" for t in texts)  # long header wrapped, not cut


def test_figure_refuses_ragged_input_and_frame_iou_matches_a_hand_count() -> None:
    with pytest.raises(ValueError, match="same number of panels"):
        PanelFigure([[np.zeros((4, 4, 3), np.uint8)], []], ["a"], ["r1", "r2"])
    truth = np.array([[0, 0], [1, 255]], np.uint8)
    pred = np.array([[0, 1], [1, 0]], np.uint8)
    assert frame_iou(pred, truth, 2) == pytest.approx((1 / 2 + 1 / 2) / 2)  # class 0: 1/2, class 1: 1/2


def test_method_palette_is_distinct_from_the_class_palette() -> None:
    classes = json.loads((REPO / "assets" / "demo_data" / "classes.json").read_text())["classes"]
    for name, rgb in [*palette.METHOD_COLOURS.items(), *enumerate(palette.EXTRA_COLOURS)]:
        for c in classes:
            assert palette.colour_distance(rgb, c["color"]) > 80, (name, c["name"])
    assert len(set(palette.METHOD_COLOURS.values())) == len(palette.METHOD_COLOURS)
    assert palette.method_colour_map(["ddpm", "new"])["new"] == palette.css(palette.EXTRA_COLOURS[1])


def test_headline_and_display_rows() -> None:
    report = {"n_train": 20, "n_test": 100, "methods": {"ddpm": {"miou": 0.704}, "unet": {"miou": 0.619},
                                                        "mae": {"miou": 0.382}}}
    h = compare_report.headline(report)
    assert (h["winner"], round(h["margin"], 3)) == ("ddpm", 0.085)
    assert h["text"] == ("ddpm wins: mIoU 0.704, +0.085 over the from-scratch UNet (0.619), with 20 labelled "
                         "frames, scored on 100 test frames.")
    rows = {r["method"]: r for r in compare_report.display_rows(report)}
    assert rows["unet"]["Δ vs UNet"] == "reference" and rows["mae"]["Δ vs UNet"] == "−0.237"
    assert all(v is not None and v != "None" for r in rows.values() for v in (r["Δ vs UNet"], r["scored on"]))
    assert compare_report.headline(None) is None


def test_prediction_store_round_trip_and_fingerprint(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "weights.pt").write_bytes(b"abc")
    fp = compare_cache.fingerprint(d)
    store = compare_cache.PredictionStore(compare_cache.store_path(tmp_path / "cmp.json"))
    calls = []

    def predict(method: str, stem: str) -> dict:
        calls.append((method, stem))
        return {"labels": np.full((4, 4), len(stem), np.uint8), "variance": np.ones((4, 4)) * 0.5, "score": 0.25}

    assert compare_cache.precompute(store, {"conddiff": fp}, ["a", "bb"], predict) == 2
    store.save()
    again = compare_cache.PredictionStore(tmp_path / "cmp_predictions.npz")
    assert compare_cache.precompute(again, {"conddiff": fp}, ["a", "bb"], predict) == 0  # nothing recomputed
    got = again.get("conddiff", fp, "bb")
    assert got["labels"].tolist() == [[2] * 4] * 4 and got["score"] == 0.25 and np.allclose(got["variance"], 0.5)
    (d / "weights.pt").write_bytes(b"refitted")
    assert again.get("conddiff", compare_cache.fingerprint(d), "bb") is None  # a refitted method is predicted again
    assert again.keep_only({"conddiff": compare_cache.fingerprint(d)}) == 6  # its old masks go (labels, variance, score × 2)


def test_shipped_store_matches_a_live_prediction() -> None:
    """The shipped npz holds exactly what the fitted method predicts now (for a fast method)."""
    from engine.data.folder import FolderDataset
    from engine.app.explore import model_input

    ws = REPO / "assets"
    report = json.loads((ws / "demo_compare.json").read_text())
    store = compare_cache.PredictionStore(compare_cache.store_path(ws / "demo_compare.json"))
    ds = FolderDataset(ws / "demo_data")
    dirs = compare_report.method_dirs(report, ws / "demo_methods", ws)
    methods = compare_report.load_methods({"unet": dirs["unet"]}, ds.classes, 64, "cpu")
    stem = ds.stems("test")[0]
    live = compare_report.frame_prediction(methods["unet"], model_input(ds, stem, 64))
    stored = store.get("unet", compare_cache.fingerprint(dirs["unet"]), stem)
    assert stored is not None and (stored["labels"] == live["labels"]).all()


def test_report_is_self_contained_and_has_every_section(tmp_path: Path) -> None:
    from engine.outputs.report import SECTION_IDS, build_report
    from engine.app.workspace import resolve

    ws = resolve(REPO / "assets")
    extra = json.loads(ws.compare.read_text())
    extra["scorecard"] = {"calibration": {"ece": 0.031}, "rows": [{"method": "ddpm", "aurc": 0.12}]}
    cmp = tmp_path / "demo_compare.json"
    cmp.write_text(json.dumps(extra))
    ws.compare = cmp  # a later section in the compare JSON must show up without code changes
    html = build_report(ws, load_classifier=False, n_frames=1)
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in html
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"http", html)  # nothing fetched at view time
    assert "Plotly" in html and "data:image/png;base64," in html
    assert 'data-key="scorecard"' in html and "0.031" in html and "aurc" in html
    assert "synthetic 64-px research demo" in html and "Not for clinical use" in html
    assert "python -m engine compare --data" in html and "--budget quick" in html
