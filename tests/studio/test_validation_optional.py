"""engine.validation.check_type accepts `X | None` (FeatureSpec.blocks is `tuple[int, ...] | None`)."""
from __future__ import annotations

from engine.validation import check_type


def test_optional_annotations() -> None:
    hint = tuple[int, ...] | None
    assert check_type(None, hint) == (None, None)
    assert check_type([5, 6], hint) == ((5, 6), None)
    assert check_type(["x"], hint)[1] == 'item 0: expected a whole number, got "x" (a string)'
