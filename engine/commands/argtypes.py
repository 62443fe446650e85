"""argparse value types that reject out-of-range input with a message listing what is valid."""
from __future__ import annotations

import argparse
import math

from ..validation import MAX_SEED


def _float(text: str) -> float:
    """Parse a number; the one place that says "expected a number" for every float-valued flag."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


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
    if value > MAX_PIXEL_BATCH:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_PIXEL_BATCH:,} (pixels gathered per step), got {value:,}")
    return value


def seed_int(text: str) -> int:
    """A random seed: a whole number 0..2**32-1 (seeds are mixed with step counters inside 64 bits)."""
    value = _int_at_least(text, 0)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_SEED} (2**32-1), got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates)."""
    value = _float(text)
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
    """A number in [0, 1] (e.g. an overlay opacity)."""
    value = _float(text)
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


# ---- upper bounds of size-like flags (README: "Limits and failure behaviour") ------------------------
MAX_MEMBERS = 100  # ensemble members (the reference uses 10); each holds a D×h1 first layer
MAX_EPOCHS = 10_000
MAX_PIXEL_BATCH = 65_536  # pixels per classifier step: B × D float32 features are gathered at once
MAX_LABEL_SIZE = 2048  # training mask side: N × L² labels are held at once
MAX_N_NOISE = 32  # noise seeds averaged per feature extraction (each is a full UNet pass)
MAX_SAMPLES = 4096  # sample --n: all samples are kept in memory for the grid
MAX_SAMPLE_BATCH = 256  # images through the UNet at once while sampling
MAX_TRAIN_BATCH = 1024  # pretrain --batch-size per process
MAX_STEPS = 100_000_000  # step counts / intervals (a year of CPU training is < 10^8 steps)
MAX_FRAMES = 1000  # frames shown in figures / studies (pca --n, compare --figure-frames, --k-study-frames)
MAX_SYNTH_SIZE = 1024  # data synth --size
MAX_SYNTH_FRAMES = 100_000  # data synth --n-unlabelled / --n-train / --n-test


def bounded_int(low: int, high: int, why: str = ""):
    """An argparse type accepting whole numbers in low..high; the message says why the bound exists."""
    def parse(text: str) -> int:
        value = _int_at_least(text, low)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,}{f' ({why})' if why else ''}, got {value:,}")
        return value

    parse.__name__ = f"int in {low}..{high}"
    return parse


def odd_window(text: str) -> int:
    """--rgb-window: 0 (off) or an odd window side up to MAX_RGB_WINDOW (a window needs a centre pixel)."""
    from ..segmentation.features import MAX_RGB_WINDOW

    value = bounded_int(0, MAX_RGB_WINDOW, "3·K² channels per pixel")(text)
    if value and value % 2 == 0:
        raise argparse.ArgumentTypeError(f"must be 0 or odd (a window centred on the pixel), got {value}")
    return value


odd_window.__name__ = "window side"


def finite_float(low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse type for a finite number (NaN and Infinity refused) within optional bounds."""
    def parse(text: str) -> float:
        value = _float(text)
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if low is not None and (value < low or (low_open and value == low)):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low:g}, got {value:g}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {value:g}")
        return value

    parse.__name__ = "finite number"
    return parse


def device(text: str) -> str:
    """A torch device this machine can run the models on: cpu, cuda, cuda:N (present GPUs) or mps.

    The one place every command's --device is checked: unknown names, devices that hold no data
    (meta) and accelerators this machine lacks are refused with one line instead of a torch traceback.
    """
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return text
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only PyTorch build" if torch.version.cuda is None else "no usable NVIDIA GPU or driver"
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine ({build}); "
                                             "use --device cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
        return text
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: Apple MPS is not available on this machine; use --device cpu")
        return text
    raise argparse.ArgumentTypeError(f"device {text!r} cannot run the models (type {dev.type!r}); "
                                     "use cpu, cuda, cuda:N or mps")
