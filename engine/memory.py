"""Pre-flight memory checks: refuse a job whose estimated peak does not fit, before allocating anything.

Estimates are rough upper bounds of the big arrays a step holds at once (what a user can change with
flags: images, members, label size, sample count); the check compares them with the memory available to
this process (Linux MemAvailable, lowered to a cgroup limit when one applies) and raises one clear
ValueError naming the flags to lower, instead of a MemoryError traceback half-way through.
"""
from __future__ import annotations

from pathlib import Path

#: Fraction of the available memory a single estimate may take (the rest: model, Python, other arrays).
HEADROOM = 0.8


def available_bytes() -> int | None:
    """Memory this process can still allocate, or None when the platform does not say."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:  # cgroup v2 limit (containers)
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            found.append(max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def gib(n: float) -> str:
    """Bytes as a short human figure (GiB or MiB)."""
    return f"{n / 1024**3:.1f} GiB" if n >= 1024**3 else f"{n / 1024**2:.0f} MiB"


def check_memory(needed: int, what: str, advice: str) -> None:
    """Raise ValueError when `needed` bytes exceed the available memory's headroom."""
    avail = available_bytes()
    if avail is not None and needed > HEADROOM * avail:
        raise ValueError(f"{what} needs about {gib(needed)} of memory but {gib(avail)} is available; {advice}")
