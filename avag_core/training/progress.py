"""Progress of a loop: tqdm's bar on a terminal, and on anything else (a log file, CI, `ros2 launch`, nohup) a plain
line every LOG_EVERY_S seconds and one at the end, instead of a redrawn bar per step."""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator

from tqdm import tqdm

LOG_EVERY_S = 30.0


class LogProgress:
    """The part of tqdm's interface the scripts use, written as whole lines."""

    def __init__(self, iterable: Iterable, desc: str, disable: bool = False, every_s: float = LOG_EVERY_S) -> None:
        self.iterable, self.desc, self.disable, self.every_s = iterable, desc, disable, every_s
        self.total = len(iterable) if hasattr(iterable, "__len__") else None
        self.postfix = ""

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _line(self, count: int, started: float) -> None:
        elapsed = time.monotonic() - started
        total = f"/{self.total}" if self.total is not None else ""
        rate = f", {count / elapsed:.2f} it/s" if elapsed > 0 else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {count}{total} in {elapsed:.0f} s{rate}{postfix}", file=sys.stderr, flush=True)

    def __iter__(self) -> Iterator:
        started = last = time.monotonic()
        count = 0
        try:
            for item in self.iterable:
                yield item
                count += 1
                if not self.disable and time.monotonic() - last >= self.every_s:
                    self._line(count, started)
                    last = time.monotonic()
        finally:  # also when the loop stops early (max_steps)
            if not self.disable:
                self._line(count, started)


def progress(iterable: Iterable, desc: str, disable: bool = False) -> tqdm | LogProgress:
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, disable=disable, dynamic_ncols=True)
    return LogProgress(iterable, desc, disable)
