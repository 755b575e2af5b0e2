"""The ring buffer every audio source writes into: the last seconds of a mono stream at one rate, each block stamped
with the ROS time of its last sample, read by sample index."""
from __future__ import annotations

import threading

import numpy as np


class RingBuffer:
    """The last `capacity_s` seconds of mono audio at one sample rate, thread-safe."""

    def __init__(self, sample_rate: int, capacity_s: float) -> None:
        self.sample_rate = sample_rate
        self._data = np.zeros(max(1, int(round(capacity_s * sample_rate))), np.float32)
        self._written = 0  # samples written since the start, ever
        self._last_stamp_ns = 0
        self._lock = threading.Lock()

    @property
    def written(self) -> int:
        return self._written

    @property
    def last_stamp_ns(self) -> int:
        return self._last_stamp_ns

    def write(self, samples: np.ndarray, stamp_ns: int) -> None:
        """Append mono samples; `stamp_ns` is the ROS time of the last one."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        total = samples.size  # all of them count as written, even where a block overflows the ring
        samples = samples[-self._data.size:]
        with self._lock:
            start = (self._written + total - samples.size) % self._data.size
            end = start + samples.size
            if end <= self._data.size:
                self._data[start:end] = samples
            else:
                split = self._data.size - start
                self._data[start:] = samples[:split]
                self._data[:end - self._data.size] = samples[split:]
            self._written += total
            self._last_stamp_ns = stamp_ns

    @property
    def capacity(self) -> int:
        """How many of the last samples the ring holds."""
        return self._data.size

    def latest(self, seconds: float) -> np.ndarray:
        """The most recent `seconds` of audio (less if not yet recorded)."""
        with self._lock:
            count = min(int(round(seconds * self.sample_rate)), self._written, self._data.size)
            return self._copy(self._written - count, self._written)

    def read(self, start: int, end: int) -> np.ndarray:
        """Samples [start, end) of the stream, counted from its first sample. Raises ValueError for samples that
        are not written yet or no longer held."""
        with self._lock:
            if not self._written - self._data.size <= start <= end <= self._written:
                raise ValueError(f"samples {start}-{end} are not in the ring, which holds "
                                 f"{max(0, self._written - self._data.size)}-{self._written}")
            return self._copy(start, end)

    def _copy(self, start: int, end: int) -> np.ndarray:
        first, count = start % self._data.size, end - start
        if first + count <= self._data.size:
            return self._data[first:first + count].copy()
        return np.concatenate((self._data[first:], self._data[:first + count - self._data.size]))

    def stamp_of(self, index: int) -> int:
        """The time of sample `index` on the clock that stamps the blocks, from the stamp of the last one written
        (the rate apart)."""
        return self.stamps_of(index)[0]

    def stamps_of(self, *indices: int) -> tuple[int, ...]:
        """stamp_of for several samples from one block's stamp: each block's stamp jitters with the clock that
        read it, so times taken from two blocks may be a little nearer or farther apart than their samples."""
        with self._lock:
            return tuple(self._last_stamp_ns - round((self._written - 1 - index) * 1e9 / self.sample_rate)
                         for index in indices)
