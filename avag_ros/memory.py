"""A node that reconfigures for days must come back to the same footprint after every lifecycle cycle.

Two things decide it with glibc's allocator, both measured on the node with the demo model:
- the pages a transition freed stay in the process until they are given back (`return_freed_memory`): 20
  deactivate/activate and cleanup/configure cycles grew it by 42 MB without, 13 MB with;
- each thread allocates from the malloc arena it was given when it started. A new inference thread per activate
  got another arena each time and left pages in the old ones: in bench/endurance.py, 20 cycles took the arenas
  from 24 MB in 7 to 42 MB in 13. `ReusedThread` runs every activation's inference loop on one thread instead.
"""
from __future__ import annotations

import ctypes
import queue
import threading
from concurrent.futures import Future
from typing import Callable

_LIBC = ctypes.CDLL(None)


def return_freed_memory() -> None:
    """Give the pages that a transition freed back to the OS, from every arena."""
    if hasattr(_LIBC, "malloc_trim"):  # glibc only; other C libraries return memory on their own terms
        _LIBC.malloc_trim(0)


class ReusedThread:
    """One daemon thread, started on the first `submit`, that runs the submitted jobs one after another.

    Not a one-worker ThreadPoolExecutor: its worker is joined at interpreter exit, so an inference loop still
    waiting for images would hold the process up, the very hang the bounded shutdown is there to prevent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[[], None], Future] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> Future:
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
            self._thread.start()
        future: Future = Future()
        self._jobs.put((job, future))
        return future

    def _serve(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, future = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as error:  # the caller's future carries it; the thread serves the next job
                    future.set_exception(error)

    def close(self) -> None:
        """End the thread after the jobs already submitted."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
