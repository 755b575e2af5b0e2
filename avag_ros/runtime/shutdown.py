"""A bounded, ordered stop for a node process: SIGINT and SIGTERM ask for it, and it always ends the process.

Every signal after the first is the same request: a terminal's Ctrl-C reaches the whole process group, so a node
under `ros2 launch` gets the terminal's SIGINT and launch's own a moment later, then launch's SIGTERM if the stop
takes over 5 s. During start-up (`starting`) the first signal raises KeyboardInterrupt in the main thread, so that
a model load or an export unwinds through its cleanup; once the node runs, a signal only asks the spin loop to end
and the node is then taken down in order. A stop that overruns its bound is forced: exit code 1 after one line
that says which step was running, followed by every thread's stack (so that a hang can be reported, not guessed).
Two watchdogs do it: a Python thread, which can name the step, and faulthandler's C thread a little later, which
needs no GIL and so fires even if the step holds it.
"""
from __future__ import annotations

import atexit
import ctypes
import faulthandler
import os
import signal
import sys
import threading
from typing import NoReturn

# Beyond the Python watchdog, in case the stuck step holds the GIL and no Python thread can run.
BACKSTOP_S = 1.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class BoundedShutdown:
    def __init__(self, name: str, timeout_s: float) -> None:
        self.name, self.timeout_s = name, timeout_s
        self.requested = threading.Event()
        self.step = "starting up"
        self.starting = True
        self._clock_started = False
        self._done = threading.Event()
        self._forcing = threading.Lock()
        for signum in SIGNALS:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        if self.requested.is_set():
            return  # the same stop, asked again; raising here could cut short the cleanup of the first
        self.requested.set()
        if self.starting:
            self.begin()
            raise KeyboardInterrupt

    def running(self) -> None:
        """Start-up is over: from now on a signal only sets `requested`, which the spin loop watches."""
        self.starting = False
        self.step = "spinning"

    def begin(self, extra_s: float = 0.0) -> None:
        """Start the clock on the teardown that follows, allowing `extra_s` more (a frame still being inferred).
        Only the first call counts: a stop asked during start-up is already being timed."""
        self.requested.set()
        if self._clock_started:
            return
        self._clock_started = True
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

    def exit(self, code: int) -> NoReturn:
        """The teardown is done: end the process with `code` now. What the interpreter would do next is free torch's
        and the middleware's objects one by one, over a second of CPU, which on a busy machine runs past launch's
        SIGKILL; the operating system takes them back at once. The exit handlers still run, and every buffered
        output is written first."""
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)  # the stop is over: a late signal must not kill the process
        atexit._run_exitfuncs()  # still under the bound's watchdogs: a hanging exit handler is forced too
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        ctypes.CDLL(None).fflush(None)  # the C streams too: the ROS loggers write through them
        self._done.set()
        faulthandler.cancel_dump_traceback_later()
        os._exit(code)
