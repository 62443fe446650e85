"""Test helper of the uncertainty tests: the issue's gradient-and-shapes photo (importable from any test folder)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def gradient_shapes_photo(path: Path) -> Path:
    """The issue's 640×480 JPEG: a colour gradient, a beige disc with a brown centre, a green rectangle, a yellow
    triangle and a grey line (drawn here independently of the engine's unfamiliar-input set)."""
    from PIL import ImageDraw

    w, h = 640, 480
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([255 * xx / w, 180 * yy / h + 40, 255 - 200 * xx / w], -1).astype(np.uint8)
    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    d.ellipse([120, 140, 320, 340], fill=(230, 210, 175))
    d.ellipse([190, 210, 250, 270], fill=(105, 65, 35))
    d.rectangle([420, 60, 590, 190], fill=(50, 150, 60))
    d.polygon([(430, 420), (600, 420), (515, 270)], fill=(245, 215, 50))
    d.line([(30, 450), (400, 30)], fill=(128, 128, 128), width=6)
    im.save(path, quality=90)
    return path
