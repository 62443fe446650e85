"""Label editing with exact class ids: canvas shapes → image-space shapes → rasterised per class.

The browser canvas (streamlit-drawable-canvas, Fabric.js) returns objects: freehand `Path`s, `Polygon`s
and `Circle`s (clicks). Their colours are never read back from pixels: each shape is converted to image
coordinates through the current `View` (which part of the frame the canvas shows, at what scale) and drawn
into the uint8 mask with its class id by Pillow on an "L" image, which does not anti-alias. Flood fill
replaces the 4-connected region of equal ids under a click. `EditStack` keeps the edits for undo/redo.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..data.classes import IGNORE_INDEX
from ..errors import UserError

Point = tuple[float, float]


@dataclass(frozen=True)
class View:
    """The frame region (x0, y0, width, height in image pixels) the canvas shows, and the canvas size."""

    x0: float
    y0: float
    width: float
    height: float
    canvas_w: int
    canvas_h: int

    @property
    def scale(self) -> float:
        """Image pixels per canvas pixel (the same on both axes: views keep the aspect ratio)."""
        return self.width / self.canvas_w

    def to_image(self, x: float, y: float) -> Point:
        return self.x0 + x * self.width / self.canvas_w, self.y0 + y * self.height / self.canvas_h


def zoom_view(image_hw: tuple[int, int], canvas_w: int, zoom: float = 1.0, cx: float = 0.5, cy: float = 0.5) -> View:
    """The view of a frame at `zoom` (1 = whole frame) centred at (cx, cy) in 0..1 of the frame; the canvas is
    `canvas_w` wide and as tall as the frame's aspect ratio asks."""
    h, w = image_hw
    if zoom < 1:
        raise UserError(f"zoom must be >= 1, got {zoom}")
    vw, vh = w / zoom, h / zoom
    x0 = min(max(cx * w - vw / 2, 0.0), w - vw)
    y0 = min(max(cy * h - vh / 2, 0.0), h - vh)
    canvas_h = max(1, round(canvas_w * h / w))
    return View(x0, y0, vw, vh, canvas_w, canvas_h)


@dataclass(frozen=True)
class Shape:
    """One edit in image coordinates: kind 'stroke' (width px), 'polygon' or 'fill' (first point), with a class id
    (255 = erase to ignore)."""

    kind: str
    points: tuple[Point, ...]
    class_id: int
    width: float = 0.0


# ---- Fabric.js objects → canvas points --------------------------------------------------------------
def _bezier(p0: Point, p1: Point, p2: Point, n: int = 6) -> list[Point]:
    return [((1 - t) ** 2 * p0[0] + 2 * (1 - t) * t * p1[0] + t**2 * p2[0],
             (1 - t) ** 2 * p0[1] + 2 * (1 - t) * t * p1[1] + t**2 * p2[1]) for t in np.linspace(0, 1, n)[1:]]


def _cubic(p0: Point, p1: Point, p2: Point, p3: Point, n: int = 8) -> list[Point]:
    return [tuple(float((1 - t) ** 3 * a + 3 * (1 - t) ** 2 * t * b + 3 * (1 - t) * t**2 * c + t**3 * d)  # type: ignore[misc]
                  for a, b, c, d in zip(p0, p1, p2, p3)) for t in np.linspace(0, 1, n)[1:]]


def path_points(path: list[list[Any]]) -> list[Point]:
    """Flatten SVG-like path commands (M, L, Q, C, Z; absolute) into a polyline."""
    pts: list[Point] = []
    for cmd in path:
        op, args = str(cmd[0]), [float(v) for v in cmd[1:]]
        if op in ("M", "L") and len(args) >= 2:
            pts.append((args[0], args[1]))
        elif op == "Q" and len(args) >= 4:
            start = pts[-1] if pts else (args[0], args[1])
            pts += _bezier(start, (args[0], args[1]), (args[2], args[3]))
        elif op == "C" and len(args) >= 6:
            start = pts[-1] if pts else (args[0], args[1])
            pts += _cubic(start, (args[0], args[1]), (args[2], args[3]), (args[4], args[5]))
        elif op in ("Z", "z") and pts:
            pts.append(pts[0])
    return pts


def _placed(obj: dict[str, Any], pts: list[Point]) -> list[Point]:
    """Apply the object's position/scale/rotation: Fabric stores path/polygon points in their own frame,
    centred on the bounding box, and places that box at (left, top) by its origin."""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    bx, by = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    sx, sy = float(obj.get("scaleX", 1) or 1), float(obj.get("scaleY", 1) or 1)
    sw = float(obj.get("strokeWidth", 0) or 0)
    full_w, full_h = (max(xs) - min(xs)) * sx + sw, (max(ys) - min(ys)) * sy + sw
    off = {"left": 0.5, "center": 0.0, "right": -0.5, "top": 0.5, "bottom": -0.5}
    cx = float(obj.get("left", bx)) + off.get(str(obj.get("originX", "left")), 0.5) * full_w
    cy = float(obj.get("top", by)) + off.get(str(obj.get("originY", "top")), 0.5) * full_h
    a = math.radians(float(obj.get("angle", 0) or 0))
    ca, sa = math.cos(a), math.sin(a)
    out = []
    for x, y in pts:
        dx, dy = (x - bx) * sx, (y - by) * sy
        out.append((cx + dx * ca - dy * sa, cy + dx * sa + dy * ca))
    return out


def canvas_shapes(json_data: dict[str, Any] | None, view: View, tool: str, class_id: int) -> list[Shape]:
    """Shapes (image coordinates) of every object on the canvas, for the tool ('brush', 'eraser', 'polygon',
    'fill') and the class they were drawn with."""
    shapes: list[Shape] = []
    cid = IGNORE_INDEX if tool == "eraser" else class_id
    for obj in (json_data or {}).get("objects", []):
        kind = obj.get("type", "").lower()
        if kind == "path" and obj.get("path"):
            pts = _placed(obj, path_points(obj["path"]))
            width = float(obj.get("strokeWidth", 1)) * view.scale
            shapes.append(Shape("stroke", tuple(view.to_image(*p) for p in pts), cid, width))
        elif kind == "polygon" and obj.get("points"):
            pts = _placed(obj, [(float(p["x"]), float(p["y"])) for p in obj["points"]])
            shapes.append(Shape("polygon", tuple(view.to_image(*p) for p in pts), cid))
        elif kind == "circle":
            r = float(obj.get("radius", 0)) * float(obj.get("scaleX", 1) or 1)
            centre = _placed(obj, [(-r, -r), (r, r)])
            c = ((centre[0][0] + centre[1][0]) / 2, (centre[0][1] + centre[1][1]) / 2)
            shapes.append(Shape("fill", (view.to_image(*c),), cid))
    return shapes


# ---- rasterisation ----------------------------------------------------------------------------------
def flood_region(mask: np.ndarray, x: float, y: float) -> np.ndarray:
    """Boolean mask of the 4-connected region of equal ids containing pixel (x, y)."""
    from skimage.segmentation import flood

    h, w = mask.shape
    r, c = min(max(int(y), 0), h - 1), min(max(int(x), 0), w - 1)
    return flood(mask, (r, c), connectivity=1)


def apply_shape(mask: np.ndarray, shape: Shape) -> np.ndarray:
    """Draw one shape into a copy of the uint8 mask with its exact class id (no anti-aliasing)."""
    if shape.kind == "fill":
        out = mask.copy()
        out[flood_region(mask, *shape.points[0])] = shape.class_id
        return out
    im = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="L")
    d = ImageDraw.Draw(im)
    pts = [(float(x), float(y)) for x, y in shape.points]
    if shape.kind == "polygon":
        if len(pts) >= 3:
            d.polygon(pts, fill=shape.class_id, outline=shape.class_id)
    elif shape.kind == "stroke":
        w = max(1, round(shape.width))
        if len(pts) > 1:
            d.line(pts, fill=shape.class_id, width=w, joint="curve")
        r = w / 2.0
        for x, y in (pts[0], pts[-1]) if len(pts) > 1 else pts:  # round caps (and a single dab)
            d.ellipse([x - r, y - r, x + r, y + r], fill=shape.class_id)
    else:
        raise UserError(f"unknown shape kind {shape.kind!r}")
    return np.asarray(im, dtype=np.uint8).copy()


@dataclass
class EditStack:
    """A frame's mask as a base (the classifier's prediction) plus edits, with undo and redo."""

    base: np.ndarray
    edits: list[list[Shape]] = field(default_factory=list)  # one entry per user action (may hold several shapes)
    undone: list[list[Shape]] = field(default_factory=list)
    _mask: np.ndarray | None = None

    def apply(self, shapes: list[Shape]) -> None:
        """Record one action; clears the redo history."""
        if not shapes:
            return
        self.edits.append(list(shapes))
        self.undone.clear()
        mask = self.mask
        for s in shapes:
            mask = apply_shape(mask, s)
        self._mask = mask

    def undo(self) -> bool:
        if not self.edits:
            return False
        self.undone.append(self.edits.pop())
        self._mask = None
        return True

    def redo(self) -> bool:
        if not self.undone:
            return False
        shapes = self.undone.pop()
        mask = self.mask
        for s in shapes:
            mask = apply_shape(mask, s)
        self.edits.append(shapes)
        self._mask = mask
        return True

    @property
    def mask(self) -> np.ndarray:
        """The current mask (base with every edit applied, in order)."""
        if self._mask is None:
            mask = self.base.copy()
            for action in self.edits:
                for s in action:
                    mask = apply_shape(mask, s)
            self._mask = mask
        return self._mask

    def summary(self) -> dict[str, int]:
        """How many shapes of each kind the current edits hold (for the label log)."""
        out: dict[str, int] = {}
        for action in self.edits:
            for s in action:
                key = "eraser" if s.class_id == IGNORE_INDEX and s.kind == "stroke" else s.kind
                out[key] = out.get(key, 0) + 1
        return out


def render_view(image: np.ndarray, mask: np.ndarray, colors: np.ndarray, opacity: float, view: View) -> Image.Image:
    """What the canvas shows: the viewed part of the frame with the mask blended in at `opacity`, scaled to the
    canvas size with nearest-neighbour sampling (label edges stay sharp when zoomed in). `colors` is (C, 3)."""
    img = image if image.dtype == np.uint8 else (np.clip(image, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    lut = np.zeros((256, 3), dtype=np.float32)
    lut[: len(colors)] = colors
    x0, y0 = math.floor(view.x0), math.floor(view.y0)
    x1, y1 = math.ceil(view.x0 + view.width), math.ceil(view.y0 + view.height)
    crop, m = img[y0:y1, x0:x1].astype(np.float32), mask[y0:y1, x0:x1]
    a = np.where(m == IGNORE_INDEX, 0.0, opacity)[..., None]
    blended = ((1 - a) * crop + a * lut[m]).round().astype(np.uint8)
    return Image.fromarray(blended).resize((view.canvas_w, view.canvas_h), Image.Resampling.NEAREST)
