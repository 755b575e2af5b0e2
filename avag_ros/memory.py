"""A node that reconfigures for days must come back to the same footprint after every lifecycle cycle.

First, nothing may keep a dropped configuration alive. `ReusedThread` used to keep the last job it ran, and with it
the inference loop, predictor and model, until the next job came: cleanup's collection could not free the model,
and after the next activate it was a reference cycle (the loop and its `~/ground` queue) that only the next
cleanup's collection freed. From the first reload on the node held two models, 42 MB of tensors for the demo b0
(counted with gc.get_objects after each cycle), 39 MB more of its own mappings by mallinfo2 and /proc/PID/smaps.

Then three things decide it with glibc's allocator, each measured on the node with the demo model:
- the pages a transition freed stay in the process until they are given back (`return_freed_memory`): 20
  deactivate/activate and cleanup/configure cycles grew it by 42 MB without, 13 MB with;
- each thread allocates from the malloc arena it was given when it started. A new inference thread per activate
  got another arena each time and left pages in the old ones: in bench/endurance.py, 20 cycles took the arenas
  from 24 MB in 7 to 42 MB in 13. `ReusedThread` runs every activation's inference loop on one thread instead,
  and every configuration's keyframe renewals on another: with a renewal thread per configure, two arenas grew by
  6 and 11 MB between the 10th and the 40th reload under a stream; with one, none changed size after the 10th;
- glibc raises its mmap threshold each time it frees a mapped block, up to 32 MiB, so once frames flow a
  reloaded model's tensors are carved from the heap, and the holes the old model's leave are pinned by smaller
  blocks allocated meanwhile. `model_blocks_mapped` gives every large block its own mapping while a model loads.
"""
from __future__ import annotations

import ctypes
import queue
import threading
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Callable

_LIBC = ctypes.CDLL(None)
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h
LOADING_MMAP_THRESHOLD = 128 * 1024  # glibc's initial threshold
RUNNING_MMAP_THRESHOLD = 32 * 1024 * 1024  # the highest glibc's own raises it to on 64-bit


@contextmanager
def model_blocks_mapped():
    """Within: every block of 128 KiB or more is its own mapping, so a model's tensors go back to the OS whole when
    it is freed. After: the threshold glibc would settle at by itself, so inference reuses its large blocks from
    the heap instead of mapping and faulting them in anew for every frame (kept at 128 KiB, the demo model's
    `predict` took 160 ms of CPU instead of 120). Setting it by hand also stops glibc from moving it."""
    if not hasattr(_LIBC, "mallopt"):  # glibc only
        yield
        return
    _LIBC.mallopt(_M_MMAP_THRESHOLD, LOADING_MMAP_THRESHOLD)
    try:
        yield
    finally:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, RUNNING_MMAP_THRESHOLD)


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
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object], Future] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], object]) -> Future:
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
            self._thread.start()
        future: Future = Future()
        self._jobs.put((job, future))
        return future

    def _serve(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, future = item
            del item
            ran, result, error = future.set_running_or_notify_cancel(), None, None
            if ran:
                try:
                    result = job()
                except BaseException as caught:  # the caller's future carries it; the thread serves the next job
                    error = caught
            # Nothing of the job stays here while the thread waits for the next, and the job goes before its caller
            # can learn that it is done: the node's cleanup may follow at once and must free the inference loop,
            # with its predictor and model.
            del job
            if ran and error is not None:
                future.set_exception(error)
            elif ran:
                future.set_result(result)
            del future, result, error

    def close(self) -> None:
        """End the thread after the jobs already submitted."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
