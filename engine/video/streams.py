"""Parallel compute streams: batches worked on by N threads of one process, results handed back in order.

On a CPU, one UNet forward with T intra-op threads waits at every op's barrier for its slowest thread, and
the reader and writer threads that share the cores make those waits longer. N streams with T/N threads each
overlap one batch's barriers with another batch's work (2 cores: 2 streams × 1 thread ran the demo UNet about
25 % faster than 1 × 2; README, video speed). With the same threads per forward the results are those of one
stream bit for bit (same batches, same ops, tested); another thread count per forward rounds a few float16
feature values differently, as `--threads` always has.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from threading import Event
from typing import Generic, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def default_streams(device: torch.device) -> int:
    """2 on a CPU with at least 2 torch threads, else 1 (an accelerator runs one forward at a time anyway)."""
    return 2 if device.type == "cpu" and torch.get_num_threads() >= 2 else 1


class OrderedStreams(Generic[T, R]):
    """`fn` over submitted items in `streams` threads; `submit` and `drain` yield results in submission order.

    A context manager: on entry the process's torch threads are divided among the streams (at least one
    each), on exit the pool is shut down (queued items cancelled, running ones finished) and the thread count
    restored. Leaving on an exception (Ctrl-C, the page's Cancel) first sets `stopping`, which `fn` may poll
    between its steps to give up early (`raise_if_stopping`) instead of finishing work nobody will read.
    With one stream `fn` runs in the calling thread and nothing changes."""

    def __init__(self, fn: Callable[[T], R], streams: int) -> None:
        if streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams}")
        self.fn, self.streams = fn, streams
        self.stopping = Event()
        self.threads_before = torch.get_num_threads()
        self.threads_per_stream = self.threads_before if streams == 1 else max(1, self.threads_before // streams)
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: deque[Future[R]] = deque()

    def __enter__(self) -> OrderedStreams[T, R]:
        if self.streams > 1:
            torch.set_num_threads(self.threads_per_stream)  # new threads take the process-wide count
            self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="stream")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            self.stopping.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            torch.set_num_threads(self.threads_before)
        self._inflight.clear()

    def submit(self, item: T) -> Iterator[R]:
        """Queue `item`; yield the results of the oldest items while more than `streams` are in flight (one
        queued beyond the running ones, so a stream that finishes starts the next item at once)."""
        if self._pool is None:
            yield self.fn(item)
            return
        self._inflight.append(self._pool.submit(self.fn, item))
        while len(self._inflight) > self.streams:
            yield self._inflight.popleft().result()

    def drain(self) -> Iterator[R]:
        """The results of everything still in flight, in submission order."""
        while self._inflight:
            yield self._inflight.popleft().result()

    def raise_if_stopping(self) -> None:
        """For `fn`, between steps: abandon the item when the caller is leaving on an exception."""
        if self.stopping.is_set():
            raise StreamsStopped("the caller stopped; this item's result will not be read")


class StreamsStopped(Exception):
    """Raised inside a stream by `raise_if_stopping`; never reaches the caller (it has already left)."""
