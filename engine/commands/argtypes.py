"""argparse value types that reject out-of-range input with a message listing what is valid."""
from __future__ import annotations

import argparse
import math

from ..validation import MAX_SEED


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


def batch_int(text: str) -> int:
    """A pixel batch size for BatchNorm layers: >= 2 (one sample has no batch statistics)."""
    value = _int_at_least(text, 1)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2 (BatchNorm needs two pixels per batch), got {value}")
    return value


def seed_int(text: str) -> int:
    """A random seed: a whole number 0..2**32-1 (seeds are mixed with step counters inside 64 bits)."""
    value = _int_at_least(text, 0)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_SEED} (2**32-1), got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def split_name(text: str) -> str:
    """A data set split: train, test or unlabeled (also 'unlabelled')."""
    from ..data.folder import SPLITS, normalize_split
    from ..errors import UserError

    try:
        return normalize_split(text, "split")
    except UserError:
        raise argparse.ArgumentTypeError(f"unknown split {text!r}; valid splits are {', '.join(SPLITS)}") from None


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


def unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


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
