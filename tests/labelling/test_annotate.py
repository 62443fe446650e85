"""Canvas shapes → exact class ids in the mask; views; undo/redo."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from engine.labelling.annotate import (
    EditStack,
    Shape,
    View,
    apply_shape,
    canvas_shapes,
    path_points,
    zoom_view,
)

# A stroke as streamlit-drawable-canvas 0.13 (Fabric 7) returned it in Chromium (see the Label page's browser test)
FABRIC_PATH = {"type": "Path", "originX": "center", "originY": "center", "left": 145, "top": 128.5,
               "width": 190.02, "height": 57.02, "stroke": "#800080", "strokeWidth": 10, "scaleX": 1, "scaleY": 1,
               "angle": 0, "path": [["M", 49.99, 99.99], ["Q", 50, 100, 55, 101.5], ["Q", 60, 103, 65, 104.5],
                                     ["Q", 220, 151, 230, 154], ["L", 240.01, 157.01]]}
FABRIC_POINT = {"type": "Circle", "left": 92, "top": 100, "width": 6, "height": 6, "radius": 3, "originX": "left",
                "originY": "center", "strokeWidth": 10, "scaleX": 1}
FABRIC_POLYGON = {"type": "Polygon", "left": 125, "top": 125, "width": 150, "height": 150, "originX": "center",
                  "originY": "center", "strokeWidth": 10, "scaleX": 1,
                  "points": [{"x": 50, "y": 50}, {"x": 200, "y": 60}, {"x": 150, "y": 200}]}


def test_stroke_is_rasterised_with_exact_ids_at_image_scale() -> None:
    base = np.full((160, 200), 2, dtype=np.uint8)
    view = View(0, 0, 200, 160, 400, 320)  # canvas shows the frame at 2x
    (shape,) = canvas_shapes({"objects": [FABRIC_PATH]}, view, "brush", 4)
    assert shape.kind == "stroke" and shape.width == 5.0
    assert shape.points[0] == (25.0 - 0.005, 50.0 - 0.005) or abs(shape.points[0][0] - 25) < 0.01
    out = apply_shape(base, shape)
    assert set(np.unique(out)) == {2, 4}  # never an in-between (anti-aliased) value
    assert out[50, 25] == 4 and out[78, 120] == 4  # start and end of the stroke, in image pixels
    assert out[10, 10] == 2 and out[150, 190] == 2
    # width: 5 image px across the line (10 canvas px / 2)
    col = out[:, 60]
    assert 4 <= int((col == 4).sum()) <= 7


def test_zoomed_view_maps_canvas_to_the_crop() -> None:
    v = zoom_view((1000, 2000), canvas_w=500, zoom=4, cx=0.75, cy=0.5)
    assert (v.width, v.height, v.canvas_h) == (500, 250, 250)
    assert v.to_image(0, 0) == (1250.0, 375.0) and v.to_image(500, 250) == (1750.0, 625.0)
    assert v.scale == 1.0
    edge = zoom_view((1000, 2000), canvas_w=500, zoom=2, cx=1.0, cy=0.0)  # clamped inside the frame
    assert (edge.x0, edge.y0) == (1000.0, 0.0)


def test_polygon_fill_and_eraser() -> None:
    view = View(0, 0, 400, 320, 400, 320)
    base = np.zeros((320, 400), dtype=np.uint8)
    (poly,) = canvas_shapes({"objects": [FABRIC_POLYGON]}, view, "polygon", 3)
    out = apply_shape(base, poly)
    assert out[100, 130] == 3 and out[250, 300] == 0 and set(np.unique(out)) == {0, 3}
    (fill,) = canvas_shapes({"objects": [FABRIC_POINT]}, view, "fill", 1)
    assert fill.kind == "fill" and fill.points[0] == (100.0, 100.0)
    filled = apply_shape(out, fill)  # (100, 100) is inside the polygon: only its 4-connected region changes
    comp, _ = ndimage.label(out == 3)  # reference: scipy's 4-connected components
    assert np.array_equal(filled == 1, comp == comp[100, 100]) and (filled == 3).sum() <= 2
    (erase,) = canvas_shapes({"objects": [FABRIC_PATH]}, view, "eraser", 1)
    assert erase.class_id == 255 and 255 in apply_shape(filled, erase)


def test_path_points_flatten_curves() -> None:
    pts = path_points([["M", 0, 0], ["Q", 10, 0, 10, 10], ["L", 20, 10]])
    assert pts[0] == (0.0, 0.0) and pts[-1] == (20.0, 10.0) and len(pts) > 3


def test_undo_redo() -> None:
    stack = EditStack(np.zeros((20, 20), dtype=np.uint8))
    a = Shape("stroke", ((2.0, 2.0), (17.0, 2.0)), 1, 3.0)
    b = Shape("fill", ((10.0, 15.0),), 2)
    stack.apply([a])
    after_a = stack.mask.copy()
    stack.apply([b])
    assert (stack.mask == 2).any()
    assert stack.undo() and np.array_equal(stack.mask, after_a)
    comp, _ = ndimage.label(after_a == 0)
    assert stack.redo() and np.array_equal(stack.mask == 2, comp == comp[15, 10])
    assert stack.undo() and stack.undo() and not stack.undo()
    assert not stack.mask.any()
    stack.redo()
    stack.apply([b])  # a new edit clears the redo history
    assert not stack.redo() and stack.summary() == {"stroke": 1, "fill": 1}


def test_render_view_crops_blends_and_scales() -> None:
    from engine.labelling.annotate import render_view

    img = np.zeros((10, 20, 3), dtype=np.uint8)
    mask = np.full((10, 20), 255, dtype=np.uint8)
    mask[5:, 10:] = 1
    colors = np.array([[0, 0, 0], [200, 100, 0]], dtype=np.uint8)
    out = np.asarray(render_view(img, mask, colors, 0.5, zoom_view((10, 20), 40, zoom=2, cx=0.75, cy=0.75)))
    assert out.shape == (20, 40, 3)  # the lower-right quarter (5x10 px) at 4x
    assert (out == [100, 50, 0]).all()
    whole = np.asarray(render_view(img, mask, colors, 1.0, zoom_view((10, 20), 20)))
    assert (whole[:5] == 0).all() and (whole[5:, 10:] == [200, 100, 0]).all()
