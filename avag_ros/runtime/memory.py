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
  from 24 MB in 7 to 42 MB in 13. `ReusedThread` (avag_ros.runtime.threads) runs every activation's inference
  loop on one thread instead, and every configuration's keyframe renewals on another: with a renewal thread per
  configure, two arenas grew by 6 and 11 MB between the 10th and the 40th reload under a stream; with one, none
  changed size after the 10th;
- glibc raises its mmap threshold each time it frees a mapped block, up to 32 MiB, so once frames flow a
  reloaded model's tensors are carved from the heap, and the holes the old model's leave are pinned by smaller
  blocks allocated meanwhile. `model_blocks_mapped` gives every large block its own mapping while a model loads.
"""
from __future__ import annotations

import ctypes
from contextlib import contextmanager

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
