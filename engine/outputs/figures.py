"""Publication figures from image panels: column headers, row names, per-panel notes (e.g. per-frame IoU),
a class legend and an optional colour bar, as a high-resolution PNG, a PDF and an SVG.

Composed with Pillow (no kaleido / matplotlib): panels are upscaled with nearest neighbour so mask pixels
stay crisp. The SVG keeps text, legend swatches and the colour bar as vector elements and embeds each panel
as a PNG data URI, so titles stay editable in Inkscape / Illustrator.
"""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .render import heatmap

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont  # Pillow's bundled default may be either


@dataclass
class ColourBar:
    """A vertical colour bar for heat-map panels: label, value range, and the ramp used (render.heatmap)."""

    label: str
    vmin: float
    vmax: float
    low_text: str = ""  # what the dark end means, e.g. "members agree"
    high_text: str = ""


@dataclass
class PanelFigure:
    """rows × columns of uint8 RGB panels with titles, notes, legend and colour bar."""

    panels: list[list[np.ndarray]]
    col_titles: list[str]
    row_titles: list[str]
    notes: list[list[str]] = field(default_factory=list)  # per panel, '' for none
    legend: list[tuple[str, tuple[int, int, int]]] = field(default_factory=list)
    colour_bar: ColourBar | None = None
    title: str = ""
    panel_px: int = 256  # each panel's longer side in the output
    font_px: int = 20

    def __post_init__(self) -> None:
        if not self.panels or not self.panels[0]:
            raise ValueError("a figure needs at least one panel")
        ncol = len(self.panels[0])
        if any(len(r) != ncol for r in self.panels):
            raise ValueError("every row needs the same number of panels")
        if len(self.col_titles) != ncol or len(self.row_titles) != len(self.panels):
            raise ValueError(f"{ncol} columns / {len(self.panels)} rows but {len(self.col_titles)} column titles / "
                             f"{len(self.row_titles)} row titles")
        if self.notes and (len(self.notes) != len(self.panels) or any(len(n) != ncol for n in self.notes)):
            raise ValueError("notes must have one entry per panel")


@dataclass
class _Layout:
    scale: float
    font: Font
    small: Font
    left: int
    top: int
    cell_w: int
    cell_h: int
    note_h: int
    gap: int
    width: int
    height: int
    legend_y: int
    bar_x: int


def _font(size: int) -> Font:
    return ImageFont.load_default(size=size)  # Pillow's bundled FreeType font: same look on every machine


def _text_w(font: Font, text: str) -> int:
    return int(font.getlength(text)) if text else 0


def _layout(fig: PanelFigure) -> _Layout:
    font, small = _font(fig.font_px), _font(int(fig.font_px * 0.8))
    h0, w0 = fig.panels[0][0].shape[:2]
    s = fig.panel_px / max(h0, w0)
    cell_w, cell_h = round(w0 * s), round(h0 * s)
    gap = max(6, fig.font_px // 2)
    note_h = int(fig.font_px * 1.3) if any(any(n) for n in fig.notes) else 0
    left = max(_text_w(font, t) for t in fig.row_titles) + 2 * gap
    title_h = int(fig.font_px * 1.8) if fig.title else 0
    head_lines = max(len(_wrap(font, t, cell_w)) for t in fig.col_titles)
    top = title_h + head_lines * int(fig.font_px * 1.25) + gap
    ncol, nrow = len(fig.col_titles), len(fig.row_titles)
    grid_w = ncol * cell_w + (ncol - 1) * gap
    bar_w = (3 * gap + 24 + max(_text_w(small, fig.colour_bar.label), 60)) if fig.colour_bar else 0
    width = left + grid_w + gap + bar_w
    legend_y = top + nrow * (cell_h + note_h + gap) + gap
    legend_h = int(fig.font_px * 1.8) if fig.legend else 0
    return _Layout(s, font, small, left, top, cell_w, cell_h, note_h, gap, width, legend_y + legend_h + gap,
                   legend_y, left + grid_w + 2 * gap)


def _wrap(font: Font, text: str, width: int) -> list[str]:
    """Greedy word wrap (never inside a word) to `width` pixels."""
    lines, cur = [], ""
    for word in text.split():
        trial = f"{cur} {word}".strip()
        if cur and _text_w(font, trial) > width:
            lines.append(cur)
            cur = word
        else:
            cur = trial
    return lines + [cur] if cur else lines or [""]


def _cell_xy(lay: _Layout, r: int, c: int) -> tuple[int, int]:
    return lay.left + c * (lay.cell_w + lay.gap), lay.top + r * (lay.cell_h + lay.note_h + lay.gap)


def _ramp(height: int) -> np.ndarray:
    """(height, 24, 3) colour-bar image, high values on top."""
    values = np.linspace(1, 0, height)[:, None].repeat(24, 1)
    return heatmap(values, vmax=1.0)


def render_png(fig: PanelFigure, dpi: int = 300) -> bytes:
    """The figure as a PNG (dpi recorded in the file)."""
    return _save(compose(fig), "PNG", dpi)


def render_pdf(fig: PanelFigure, dpi: int = 300) -> bytes:
    """The figure as a one-page PDF (raster at `dpi`)."""
    return _save(compose(fig), "PDF", dpi)


def _save(img: Image.Image, fmt: str, dpi: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, dpi=(dpi, dpi), resolution=float(dpi)) if fmt == "PDF" else \
        img.save(buf, format=fmt, dpi=(dpi, dpi))
    return buf.getvalue()


def compose(fig: PanelFigure) -> Image.Image:
    """The figure as one RGB image."""
    lay = _layout(fig)
    img = Image.new("RGB", (lay.width, lay.height), "white")
    d = ImageDraw.Draw(img)
    if fig.title:
        d.text((lay.left, lay.gap // 2), fig.title, fill="black", font=lay.font)
    head_top = lay.top - lay.gap - max(len(_wrap(lay.font, t, lay.cell_w)) for t in fig.col_titles) * int(fig.font_px * 1.25)
    for c, title in enumerate(fig.col_titles):
        x, _ = _cell_xy(lay, 0, c)
        for i, line in enumerate(_wrap(lay.font, title, lay.cell_w)):
            d.text((x + (lay.cell_w - _text_w(lay.font, line)) // 2, head_top + i * int(fig.font_px * 1.25)), line,
                   fill="black", font=lay.font)
    for r, row in enumerate(fig.panels):
        _, y = _cell_xy(lay, r, 0)
        d.text((lay.gap, y + lay.cell_h // 2), fig.row_titles[r], fill="black", font=lay.font, anchor="lm")
        for c, panel in enumerate(row):
            x, y = _cell_xy(lay, r, c)
            img.paste(Image.fromarray(_rgb(panel)).resize((lay.cell_w, lay.cell_h), Image.Resampling.NEAREST), (x, y))
            note = fig.notes[r][c] if fig.notes else ""
            if note:
                d.text((x + lay.cell_w // 2, y + lay.cell_h + lay.note_h // 2), note, fill="black", font=lay.small,
                       anchor="mm")
    x = lay.left
    for name, rgb in fig.legend:
        sw = int(fig.font_px * 0.9)
        d.rectangle([x, lay.legend_y, x + sw, lay.legend_y + sw], fill=tuple(rgb), outline="#555555")
        d.text((x + sw + 6, lay.legend_y + sw // 2), name, fill="black", font=lay.font, anchor="lm")
        x += sw + 6 + _text_w(lay.font, name) + 3 * lay.gap
    if fig.colour_bar:
        cb, top = fig.colour_bar, lay.top
        bar_h = lay.cell_h
        img.paste(Image.fromarray(_ramp(bar_h)), (lay.bar_x, top))
        d.rectangle([lay.bar_x, top, lay.bar_x + 23, top + bar_h - 1], outline="#555555")
        tx = lay.bar_x + 30
        d.text((tx, top), f"{cb.vmax:.3g} {cb.high_text}".strip(), fill="black", font=lay.small, anchor="lt")
        d.text((tx, top + bar_h), f"{cb.vmin:.3g} {cb.low_text}".strip(), fill="black", font=lay.small, anchor="lb")
        d.text((lay.bar_x, top + bar_h + lay.gap), cb.label, fill="black", font=lay.small, anchor="lt")
    return img


def _rgb(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return a[..., :3].astype(np.uint8)


def _png_uri(a: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(_rgb(a)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render_svg(fig: PanelFigure) -> str:
    """The figure as SVG: vector text, swatches and colour-bar frame; panels embedded as PNG data URIs."""
    lay = _layout(fig)
    fs, fs_small = fig.font_px, int(fig.font_px * 0.8)
    esc = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width}" height="{lay.height}" '
           f'viewBox="0 0 {lay.width} {lay.height}" font-family="DejaVu Sans, Arial, sans-serif">',
           f'<rect width="{lay.width}" height="{lay.height}" fill="white"/>']
    if fig.title:
        out.append(f'<text x="{lay.left}" y="{lay.gap // 2 + fs}" font-size="{fs}">{esc(fig.title)}</text>')
    lines_n = max(len(_wrap(lay.font, t, lay.cell_w)) for t in fig.col_titles)
    head_top = lay.top - lay.gap - lines_n * int(fs * 1.25)
    for c, title in enumerate(fig.col_titles):
        x, _ = _cell_xy(lay, 0, c)
        for i, line in enumerate(_wrap(lay.font, title, lay.cell_w)):
            out.append(f'<text x="{x + lay.cell_w / 2}" y="{head_top + i * int(fs * 1.25) + fs}" font-size="{fs}" '
                       f'text-anchor="middle">{esc(line)}</text>')
    for r, row in enumerate(fig.panels):
        _, y = _cell_xy(lay, r, 0)
        out.append(f'<text x="{lay.gap}" y="{y + lay.cell_h / 2}" font-size="{fs}" dominant-baseline="middle">'
                   f'{esc(fig.row_titles[r])}</text>')
        for c, panel in enumerate(row):
            x, y = _cell_xy(lay, r, c)
            out.append(f'<image x="{x}" y="{y}" width="{lay.cell_w}" height="{lay.cell_h}" '
                       f'style="image-rendering:pixelated" preserveAspectRatio="none" href="{_png_uri(panel)}"/>')
            note = fig.notes[r][c] if fig.notes else ""
            if note:
                out.append(f'<text x="{x + lay.cell_w / 2}" y="{y + lay.cell_h + lay.note_h / 2}" font-size="{fs_small}" '
                           f'text-anchor="middle" dominant-baseline="middle">{esc(note)}</text>')
    x = lay.left
    for name, rgb in fig.legend:
        sw = int(fs * 0.9)
        out.append(f'<rect x="{x}" y="{lay.legend_y}" width="{sw}" height="{sw}" fill="rgb{tuple(int(v) for v in rgb)}" '
                   f'stroke="#555555"/>')
        out.append(f'<text x="{x + sw + 6}" y="{lay.legend_y + sw / 2}" font-size="{fs}" dominant-baseline="middle">'
                   f'{esc(name)}</text>')
        x += sw + 6 + _text_w(lay.font, name) + 3 * lay.gap
    if fig.colour_bar:
        cb, top = fig.colour_bar, lay.top
        out.append(f'<image x="{lay.bar_x}" y="{top}" width="24" height="{lay.cell_h}" preserveAspectRatio="none" '
                   f'href="{_png_uri(_ramp(lay.cell_h))}"/>')
        out.append(f'<rect x="{lay.bar_x}" y="{top}" width="24" height="{lay.cell_h}" fill="none" stroke="#555555"/>')
        out.append(f'<text x="{lay.bar_x + 30}" y="{top + fs_small}" font-size="{fs_small}">'
                   f'{esc(f"{cb.vmax:.3g} {cb.high_text}".strip())}</text>')
        out.append(f'<text x="{lay.bar_x + 30}" y="{top + lay.cell_h}" font-size="{fs_small}">'
                   f'{esc(f"{cb.vmin:.3g} {cb.low_text}".strip())}</text>')
        out.append(f'<text x="{lay.bar_x}" y="{top + lay.cell_h + lay.gap + fs_small}" font-size="{fs_small}">'
                   f'{esc(cb.label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def frame_iou(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """mIoU of one frame (ignore masked, classes absent from both skipped): the per-panel note of a figure."""
    from ..scoring.metrics import ConfusionMatrix

    cm = ConfusionMatrix(num_classes).update(pred, truth)
    iou = cm.iou()
    finite = iou[~np.isnan(iou)]
    return float(finite.mean()) if finite.size else float("nan")


def legend_of(names: Sequence[str], colours: Sequence[Sequence[int]]) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, rgb) pairs for PanelFigure.legend."""
    return [(n, tuple(int(v) for v in c)) for n, c in zip(names, colours)]  # type: ignore[misc]
