"""A bounded, ordered stop for a node process: SIGINT and SIGTERM ask for it, and it always ends the process.

The first signal only asks the spin loop to end; the node is then taken down in order. If that takes longer than
the bound, or a second signal arrives meanwhile, the process is ended with exit code 1 after one line that says
why and which step was running, followed by every thread's stack (so that a hang can be reported, not guessed).
Two watchdogs do it: a Python thread, which can name the step, and faulthandler's C thread a little later, which
needs no GIL and so fires even if the step holds it.
"""
from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading

# Beyond the Python watchdog, in case the stuck step holds the GIL and no Python thread can run.
BACKSTOP_S = 1.0


class BoundedShutdown:
    def __init__(self, name: str, timeout_s: float) -> None:
        self.name, self.timeout_s = name, timeout_s
        self.requested = threading.Event()
        self.step = "spinning"
        self._done = threading.Event()
        self._forcing = threading.Lock()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        if self.requested.is_set():
            self.force(f"received a second {signal.Signals(signum).name}")
        self.requested.set()

    def begin(self, extra_s: float = 0.0) -> None:
        """Start the clock on the teardown that follows, allowing `extra_s` more (a frame still being inferred)."""
        self.requested.set()
        self.timeout_s += extra_s
        faulthandler.dump_traceback_later(self.timeout_s + BACKSTOP_S, exit=True)
        threading.Thread(target=self._watch, name="shutdown_watchdog", daemon=True).start()

    def set_step(self, step: str) -> None:
        self.step = step

    def _watch(self) -> None:
        if not self._done.wait(self.timeout_s):
            self.force(f"did not stop within {self.timeout_s:g} s")

    def force(self, why: str) -> None:
        """End the process now, saying so once. Safe in a signal handler: it writes with os.write only."""
        if not self._forcing.acquire(blocking=False):
            return
        os.write(sys.stderr.fileno(), f"[ERROR] [{self.name}]: shutdown {why} (step: {self.step}); forcing exit, "
                                      "thread stacks follow\n".encode())
        faulthandler.dump_traceback(all_threads=True)
        os._exit(1)

    def finished(self) -> None:
        self._done.set()
        faulthandler.cancel_dump_traceback_later()
