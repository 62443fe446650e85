"""argparse value types that reject out-of-range input with a message listing what is valid."""
from __future__ import annotations

import argparse
import math


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


def unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
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


def finite_float(low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse type for a finite number (NaN and Infinity refused) within optional bounds."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
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
