"""argparse value types that reject out-of-range input with a message listing what is valid."""
from __future__ import annotations

import argparse


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def nonneg_int(text: str) -> int:
    return _int_at_least(text, 0)


def int_list(text: str) -> list[int]:
    """'50,150,250' → [50, 150, 250] (no duplicates). Ranges depend on the model: callers check them with
    check_timesteps / check_blocks, whose errors list the valid values (negative ones included)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one value")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"duplicate values in {text!r}")
    return values


def check_timesteps(parser: argparse.ArgumentParser, steps: list[int], num_timesteps: int, flag: str = "--steps") -> None:
    """Exit with an argparse error when a timestep is outside 0..T-1."""
    bad = [t for t in steps if not 0 <= t < num_timesteps]
    if bad:
        parser.error(f"{flag}: timestep(s) {bad} out of range; valid timesteps are 0..{num_timesteps - 1}")


def check_blocks(parser: argparse.ArgumentParser, blocks: list[int], num_blocks: int, flag: str = "--blocks") -> None:
    """Exit with an argparse error when a decoder block index does not exist."""
    bad = [b for b in blocks if not 0 <= b < num_blocks]
    if bad:
        parser.error(f"{flag}: unknown decoder block(s) {bad}; this model's valid blocks are 0..{num_blocks - 1}")
