"""Colours of compared methods: one palette, distinct from the class palette (classes own red, pink, grey,
yellow and purple in the study's convention), so a method never looks like a class in a figure.

Class colours come from the data set's ClassTable (engine/data/classes.py); this module only adds the
method colours (Okabe–Ito-derived, colour-blind safe) and the helpers figures share.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

METHOD_COLOURS: dict[str, tuple[int, int, int]] = {
    "ddpm": (0, 114, 178),  # blue
    "ddpm-mn": (86, 180, 233),  # sky blue
    "unet": (213, 94, 0),  # vermillion (Okabe–Ito orange is too close to skin yellow)
    "mae": (0, 158, 115),  # bluish green
    "swav": (101, 67, 33),  # dark brown
    "datasetddpm": (23, 190, 207),  # cyan
    "conddiff": (107, 142, 35),  # olive
}
EXTRA_COLOURS: tuple[tuple[int, int, int], ...] = ((31, 58, 147), (0, 0, 0), (0, 90, 90), (150, 200, 60))


def method_colour(name: str, index: int = 0) -> tuple[int, int, int]:
    """RGB of a method; unknown methods take the extra colours in turn (by their index in the list shown)."""
    return METHOD_COLOURS.get(name, EXTRA_COLOURS[index % len(EXTRA_COLOURS)])


def method_colour_map(names: Iterable[str]) -> dict[str, str]:
    """name → 'rgb(r,g,b)' for plotly's color_discrete_map."""
    return {n: css(method_colour(n, i)) for i, n in enumerate(names)}


def css(rgb: Sequence[int]) -> str:
    """'rgb(r,g,b)' of an RGB triple."""
    return f"rgb({int(rgb[0])},{int(rgb[1])},{int(rgb[2])})"


def hex_colour(rgb: Sequence[int]) -> str:
    """'#rrggbb' of an RGB triple."""
    return "#" + "".join(f"{int(v):02x}" for v in rgb[:3])


def colour_distance(a: Sequence[int], b: Sequence[int]) -> float:
    """Euclidean distance in RGB (0..441): a cheap check that two colours cannot be confused."""
    return float(sum((int(x) - int(y)) ** 2 for x, y in zip(a, b)) ** 0.5)
