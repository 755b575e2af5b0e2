"""A thread runner for jobs that must always run on the same thread: the node's inference loops, one per activation,
and its keyframe renewals, one per configuration.

One thread for the node's life keeps inference in one malloc arena (avag_ros.runtime.memory says what a new
thread per activation cost), and being a daemon it never holds up the interpreter's exit.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Callable


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
