"""The video overlay's integer blend: the still-frame overlay's picture (±1 grey level), ignore pixels clear."""
from __future__ import annotations

import numpy as np
import pytest

from engine.data.classes import IGNORE_INDEX, ClassTable
from engine.outputs.render import boundaries, overlay
from engine.video.overlay import blend


@pytest.mark.parametrize("opacity", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("contours", [False, True])
def test_blend_matches_the_float_overlay(opacity: float, contours: bool) -> None:
    rng = np.random.default_rng(3)
    classes = ClassTable.from_pairs([("pupil", (255, 0, 0)), ("iris", (0, 200, 30)), ("skin", (7, 9, 250))])
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    mask = rng.integers(0, len(classes.names), (37, 53)).astype(np.uint8)
    mask[5:9, 10:20] = IGNORE_INDEX
    got = blend(rgb, mask, classes.colors, opacity, contours)
    assert got.dtype == np.uint8 and got.shape == rgb.shape
    if contours:  # the class boundaries in their colour over the untouched frame (opacity plays no part)
        edge = boundaries(mask) & (mask != IGNORE_INDEX)
        ref = rgb.copy()
        ref[edge] = classes.colorize(mask)[edge]
        np.testing.assert_array_equal(got, ref)
    else:
        ref = overlay(rgb, mask, classes, opacity)
        assert int(np.abs(got.astype(int) - ref.astype(int)).max()) <= 1
        # and exactly the rounded integer expression, pixel by pixel
        a = round(opacity * 256)
        col = np.asarray(classes.colors, int)[np.minimum(mask, len(classes.names) - 1)]
        plain = (rgb.astype(int) * (256 - a) + col * a + 128) >> 8
        valid = mask != IGNORE_INDEX
        np.testing.assert_array_equal(got[valid], plain[valid])
    np.testing.assert_array_equal(got[5:9, 10:20], rgb[5:9, 10:20])  # ignore pixels stay clear
