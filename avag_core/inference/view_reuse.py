"""Image-feature reuse while the view holds still.

The image side (backbone, deformable encoder, FPN) is most of a frame's cost, yet a camera watching a table sees
the same view for seconds while the sound changes. The image side's outputs are kept with a fingerprint of the
keyframe's view: the frame shrunk to 32x24 grey, each cell the mean of its block, so that per-pixel sensor noise
averages out while a moving object still shifts whole cells. A frame whose fingerprint differs from the keyframe's
by less than `max_change` (mean absolute difference, in grey levels 0..255) and of the same size is decoded from
the kept outputs; any other frame becomes the next keyframe. A keyframe `max_age_s` old is renewed from the next
frame of its view beside the stream, on a thread of its own, while it goes on standing for the frames that come
meanwhile: a still stream does not stop for the renewal's full image pass.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import torch

from ..image import as_rgb

FINGERPRINT_SIZE = (32, 24)  # width, height, as cv2 takes it
STALE_LIMIT = 2.0  # a keyframe stands while it is renewed until it is this many max_age_s old
DEFAULT_WINDOW_S = 10.0


def view_fingerprint(image: np.ndarray) -> np.ndarray:
    """An image the predictor accepts -> 24x32 float32 grey levels (0..255), each the mean of its block."""
    grey = cv2.cvtColor(as_rgb(image), cv2.COLOR_RGB2GRAY)
    # float before shrinking: cv2 rounds a uint8 average back to whole grey levels, which hides small changes
    return cv2.resize(grey.astype(np.float32), FINGERPRINT_SIZE, interpolation=cv2.INTER_AREA)


def view_change(fingerprint: np.ndarray, reference: np.ndarray) -> float:
    """Mean absolute difference of two fingerprints, in grey levels."""
    return float(np.mean(np.abs(fingerprint - reference)))


@dataclass(frozen=True)
class Keyframe:
    fingerprint: np.ndarray
    size: tuple[int, int]  # height, width of the frame
    maps: list[torch.Tensor]  # the image side's FPN maps
    taken_at: float  # on the ViewReuse's clock


class ViewReuse:
    """Keeps the last keyframe's image-side outputs and decides, frame by frame, whether they stand for the new one.

    `max_change` and `max_age_s` may be changed at any time (the node's run-time parameters); either at 0 turns
    reuse off. `maps_for` runs on the inference thread, `diagnostics` on any other. One image pass runs at a
    time (an exported backend's image graph is not reentrant): a frame that needs its own waits for a renewal
    in progress.
    """

    def __init__(self, max_change: float, max_age_s: float, window_s: float = DEFAULT_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic,
                 renew_on: Callable[[Callable[[], Keyframe]], Future] | None = None) -> None:
        """`renew_on` starts a renewal and returns its future (an executor's `submit`); without it, a thread of this
        ViewReuse's own, which `close` ends. A process that makes a ViewReuse per model load (the node, at every
        configure) passes one thread for its life: each new thread takes a malloc arena, and the image passes of
        the renewals left pages in every one (avag_ros.runtime.memory)."""
        if max_change < 0 or max_age_s < 0:
            raise ValueError(f"max_change and max_age_s must be >= 0 (0 turns reuse off), got {max_change} and "
                             f"{max_age_s}")
        self.max_change = max_change
        self.max_age_s = max_age_s
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._keyframe: Keyframe | None = None
        self._renewal: Future[Keyframe] | None = None
        self._own_renewer = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyframe-renewal")
                             if renew_on is None else None)
        self._renew_on = renew_on if renew_on is not None else self._own_renewer.submit
        self._closed = False
        self._decisions: deque[tuple[float, bool]] = deque()  # (when, reused) over the last window_s
        self.last_change = math.nan  # vs the keyframe; NaN while there is none of this frame's size
        self.last_reused = False

    @property
    def enabled(self) -> bool:
        return self.max_change > 0 and self.max_age_s > 0

    @property
    def renewing(self) -> bool:
        """Whether a keyframe's renewal is computing."""
        renewal = self._renewal
        return renewal is not None and not renewal.done()

    def maps_for(self, image: np.ndarray,
                 encode: Callable[[np.ndarray], list[torch.Tensor]]) -> list[torch.Tensor]:
        """The keyframe's maps if `image` shows its view, else `encode(image)`'s, kept as the new keyframe.

        A keyframe `max_age_s` old is renewed beside the stream and stands meanwhile, up to twice `max_age_s`: one
        older (after a pause in the stream, or behind a renewal that cannot keep up) never stands, and a renewal
        in progress is waited for. A renewal that has finished becomes the keyframe first; one that failed raises
        its error here, and the next stale frame tries again.
        """
        if self._closed:
            raise RuntimeError("this ViewReuse is closed: make a new one")
        now = self._clock()
        if self._renewal is not None:
            keyframe = self._keyframe
            if keyframe is not None and now - keyframe.taken_at >= STALE_LIMIT * self.max_age_s:
                self.wait_for_renewal()
            if self._renewal.done():
                self._install_renewal()
        if not self.enabled:
            self._drop_renewal()
            self._set_keyframe(None)
            self._decide(now, math.nan, False)
            return encode(image)
        fingerprint = view_fingerprint(image)
        size = np.asarray(image).shape[:2]
        keyframe = self._keyframe
        comparable = keyframe is not None and keyframe.size == size
        change = view_change(fingerprint, keyframe.fingerprint) if comparable else math.nan
        age = now - keyframe.taken_at if keyframe is not None else math.inf
        reused = comparable and change < self.max_change and age < STALE_LIMIT * self.max_age_s
        self._decide(now, change, reused)
        if reused:
            if age >= self.max_age_s and self._renewal is None:
                frame = np.array(image)  # the caller may fill its buffer with the next frame before this is read
                self._renewal = self._renew_on(lambda: Keyframe(fingerprint, size, encode(frame), now))
            return keyframe.maps
        self._drop_renewal()
        maps = encode(image)
        self._set_keyframe(Keyframe(fingerprint, size, maps, now))
        return maps

    def wait_for_renewal(self) -> None:
        """Return once a renewal in progress has finished; the next frame installs its keyframe."""
        if self._renewal is not None:
            wait([self._renewal])

    def _drop_renewal(self) -> None:
        """The frame needs an image pass of its own, and one runs at a time: let a renewal finish, and forget it,
        errors included, since it renewed a view that is gone."""
        self.wait_for_renewal()
        self._renewal = None

    def close(self) -> None:
        """For the end of its use: let a renewal in progress finish and end its own renewal thread, so that nothing
        computes after this returns and the model can be freed."""
        self._closed = True
        self._drop_renewal()
        self._set_keyframe(None)
        if self._own_renewer is not None:
            self._own_renewer.shutdown(wait=True)

    def _install_renewal(self) -> None:
        renewal, self._renewal = self._renewal, None
        try:
            keyframe = renewal.result()
        except Exception as error:
            raise RuntimeError(f"renewing the keyframe's image features failed: {error!r}") from error
        self._set_keyframe(keyframe)

    def _set_keyframe(self, keyframe: Keyframe | None) -> None:
        with self._lock:  # diagnostics reads it from another thread
            self._keyframe = keyframe

    def _decide(self, now: float, change: float, reused: bool) -> None:
        with self._lock:
            self.last_change, self.last_reused = change, reused
            self._decisions.append((now, reused))
            while self._decisions and self._decisions[0][0] < now - self.window_s:
                self._decisions.popleft()

    def diagnostics(self) -> dict[str, float]:
        """Share of frames reused over the last window_s, the keyframe's age in seconds and the last change."""
        now = self._clock()
        with self._lock:
            recent = [reused for when, reused in self._decisions if when >= now - self.window_s]
            keyframe = self._keyframe
            return {"reuse_ratio": sum(recent) / len(recent) if recent else 0.0,
                    "keyframe_age_s": now - keyframe.taken_at if keyframe is not None else math.nan,
                    "view_change": self.last_change}
