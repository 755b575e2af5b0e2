"""The node's rates, latencies and counters, as /diagnostics reports them."""
from __future__ import annotations

import math
import threading
import time
from collections import deque

import numpy as np

STATS_WINDOW_S = 10.0


class Statistics:
    """Rates and latencies over the last STATS_WINDOW_S seconds, plus running counters. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received: deque[float] = deque()
        self.inferred: deque[float] = deque()
        self.latencies: deque[tuple[float, float]] = deque()
        self.model_times: deque[tuple[float, float]] = deque()
        self.last_received = -math.inf
        self.dropped = 0
        self.rejected = 0
        self.ignored_inactive = 0  # well-formed images that came while the node was not active
        self.failed = 0

    def _trim(self, now: float) -> None:
        for queue in (self.received, self.inferred):
            while queue and queue[0] < now - STATS_WINDOW_S:
                queue.popleft()
        for timed in (self.latencies, self.model_times):
            while timed and timed[0][0] < now - STATS_WINDOW_S:
                timed.popleft()

    def image_received(self, replaced_unprocessed: bool) -> None:
        now = time.monotonic()
        with self._lock:
            self.received.append(now)
            self.last_received = now
            self.dropped += replaced_unprocessed
            self._trim(now)

    def inference_done(self, latency_s: float, model_s: float) -> None:
        now = time.monotonic()
        with self._lock:
            self.inferred.append(now)
            self.latencies.append((now, latency_s))
            self.model_times.append((now, model_s))
            self._trim(now)

    def count(self, field: str) -> None:
        with self._lock:
            setattr(self, field, getattr(self, field) + 1)

    def longest_model_s(self) -> float:
        with self._lock:
            return max((t for _, t in self.model_times), default=0.0)

    def snapshot(self) -> dict[str, float]:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            latencies = np.array([lat for _, lat in self.latencies]) * 1000
            model_times = np.array([t for _, t in self.model_times]) * 1000
            return {
                "input_rate_hz": len(self.received) / STATS_WINDOW_S,
                "inference_rate_hz": len(self.inferred) / STATS_WINDOW_S,
                "latency_median_ms": float(np.median(latencies)) if latencies.size else math.nan,
                "latency_p95_ms": float(np.percentile(latencies, 95)) if latencies.size else math.nan,
                "model_median_ms": float(np.median(model_times)) if model_times.size else math.nan,
                "frames_dropped": self.dropped, "frames_rejected": self.rejected,
                "frames_ignored_inactive": self.ignored_inactive, "inference_errors": self.failed,
            }
