"""Progress on stderr for the CLI and long engine runs: one rewritten line on a terminal, periodic plain lines in a log file.

A job's log (the dashboard's background jobs, `… 2> log`) is not a TTY: there a `\r`-rewritten line would
become one enormous line with the INFO messages interleaved, so plain lines are written instead, at most
one every `every_s` seconds, plus the last one.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

PLAIN_EVERY_S = 10.0


def is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress_printer(stream: TextIO | None = None, every_s: float = PLAIN_EVERY_S,
                     tty: bool | None = None) -> Callable[[int, int, str], None]:
    """A `progress(done, total, msg)` callback writing to `stream` (default: stderr)."""
    out = stream if stream is not None else sys.stderr
    live = is_tty(out) if tty is None else tty
    last = {"t": float("-inf")}

    def report(done: int, total: int, msg: str) -> None:
        line = f"[{done}/{total}] {msg}"
        if live:
            print(f"\r{line}".ljust(70), end="", file=out, flush=True)
            if done == total:
                print(file=out)
            return
        now = time.monotonic()
        if done == total or now - last["t"] >= every_s:
            last["t"] = now
            print(line, file=out, flush=True)

    return report
