"""The newest-frame slot and the loop that takes each frame through conversion, the sound check, the predictor and
the outputs. Image callbacks only ever replace the frame in the slot, so they never wait for the model; the loop
runs in the node's inference thread, one frame at a time, at most `max_rate_hz`. Between two frames it answers
the `~/ground` requests waiting in `requests` (avag_ros.ground_service), before the next frame and whatever the
rate limit.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image

from avag_core import AffordancePredictor
from avag_core.audio import EXAMPLE_OVERHANG_S, EXAMPLE_SECONDS

from .audio_sources import AudioSource, sound_event_active
from .conversions import check_compressed, check_image, compressed_to_rgb, image_to_rgb
from .depth_targets import DepthPin
from .ground_service import GroundQueue, ground
from .outputs import FrameResult, Outputs
from .parameters import GroundingSettings
from .statistics import Statistics


def accept_image(msg: Image | CompressedImage, stats: Statistics, log) -> bool:
    """False, counted as rejected and logged, for a message whose fields do not make an image; reads no pixel."""
    try:
        check_compressed(msg) if isinstance(msg, CompressedImage) else check_image(msg)
    except ValueError as error:
        stats.count("rejected")
        log.warning(f"dropping image: {error}", throttle_duration_sec=2.0)
        return False
    return True


class InferenceLoop:
    """One configuration's frames: built at configure, run from activate to deactivate. `settings` gives the
    node's current settings, which parameter changes replace while the loop runs."""

    def __init__(self, node, settings: Callable[[], GroundingSettings], predictor: AffordancePredictor,
                 audio: AudioSource, outputs: Outputs, stats: Statistics) -> None:
        self._node = node  # its logger, clock and context
        self._settings, self._predictor, self._audio, self._outputs, self._stats = (settings, predictor, audio,
                                                                                     outputs, stats)
        self._latest: tuple[Image | CompressedImage, DepthPin | None] | None = None
        self._newest: Image | CompressedImage | None = None  # the last accepted frame: a request's "newest" image
        self._wakeup = threading.Condition()
        self._stop = threading.Event()
        self.requests = GroundQueue(self._wake)

    def offer(self, msg: Image | CompressedImage) -> bool:
        """Puts a frame in the slot, in place of one still waiting; False if the image is refused."""
        if not accept_image(msg, self._stats, self._node.get_logger()):
            return False
        pin = self._outputs.pin_depth(msg.header)
        self._newest = msg
        with self._wakeup:
            replaced, self._latest = self._latest, (msg, pin)
            self._stats.image_received(replaced_unprocessed=replaced is not None)
            self._wakeup.notify()
        if replaced is not None:
            self._outputs.release_depth(replaced[1])
        return True

    def prepare(self) -> None:
        """Before `run` is submitted, so that a `stop` that comes before the thread starts is not lost."""
        self._stop.clear()

    def stop(self) -> None:
        """Asks `run` to return after the frame in hand."""
        self._stop.set()
        self._wake()

    def _wake(self) -> None:
        with self._wakeup:
            self._wakeup.notify_all()

    def discard_waiting(self) -> None:
        with self._wakeup:
            frame, self._latest = self._latest, None
        if frame is not None:
            self._outputs.release_depth(frame[1])

    def _next_frame(self, not_before: float) -> tuple[Image | CompressedImage, DepthPin | None] | None:
        """The frame in the slot once `not_before` (monotonic) has come; None as soon as a request waits or the
        loop is stopped."""
        with self._wakeup:
            while not self._stop.is_set() and not self.requests.waiting():
                delay = not_before - time.monotonic()
                if delay <= 0 and self._latest is not None:
                    frame, self._latest = self._latest, None
                    return frame
                self._wakeup.wait(delay if delay > 0 else None)
            return None

    def _serve_requests(self) -> None:
        while (pending := self.requests.take()) is not None:
            try:
                ground(pending, self._newest, self._predictor, self._settings().audio_min_level_db)
            except Exception as error:  # the thread must survive anything one request can do
                self._node.get_logger().error(f"~/ground failed: {error!r}", throttle_duration_sec=5.0)
                pending.answer(False, f"inference failed: {error!r}")

    def run(self) -> None:
        next_allowed = 0.0
        while not self._stop.is_set():
            self._serve_requests()
            frame = self._next_frame(next_allowed)
            if frame is None:  # stopped, or a request came: the loop looks at both
                continue
            rate = self._settings().max_rate_hz
            next_allowed = time.monotonic() + (1.0 / rate if rate > 0 else 0.0)
            msg, depth_pin = frame
            try:
                self._process(msg, depth_pin)
            except Exception as error:  # the thread must survive anything one frame can do
                if not self._node.context.ok():  # the process is going down under this frame: nothing failed
                    return
                self._stats.count("failed")
                self._node.get_logger().error(f"inference failed on one frame: {error!r}", throttle_duration_sec=5.0)
            finally:
                self._outputs.release_depth(depth_pin)

    def _process(self, msg: Image | CompressedImage, depth_pin: DepthPin | None) -> None:
        log = self._node.get_logger()
        try:
            rgb = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
        except ValueError as error:
            self._stats.count("rejected")
            log.warning(f"dropping image: {error}", throttle_duration_sec=2.0)
            return
        settings, predictor = self._settings(), self._predictor
        buffer = self._audio.buffer  # once: the topic source swaps its buffer when AudioInfo changes the rate
        try:
            sound_active = sound_event_active(buffer, settings.audio_hold_s, settings.audio_min_level_db)
        except ValueError as error:
            self._stats.count("rejected")
            log.warning(f"skipping frame: {error}", throttle_duration_sec=2.0)
            return
        if not sound_active:
            if settings.publish_when_silent:
                empty = np.zeros(rgb.shape[:2], bool)
                self._outputs.publish(FrameResult(msg.header, rgb, empty, empty, None, False,
                                                  buffer.level_db(settings.audio_hold_s)), depth_pin)
            return
        audio = buffer.latest(settings.audio_window_s, align_s=EXAMPLE_SECONDS, overhang_s=EXAMPLE_OVERHANG_S)
        started = time.perf_counter()
        try:
            prediction = predictor.predict(rgb, audio, buffer.sample_rate)
        except ValueError as error:
            self._stats.count("rejected")
            log.warning(f"skipping frame: {error}", throttle_duration_sec=2.0)
            return
        model_s = time.perf_counter() - started
        self._outputs.publish(FrameResult(msg.header, rgb, prediction.function_mask, prediction.dependency_mask,
                                          prediction, True, buffer.level_db(settings.audio_hold_s)),
                              depth_pin)
        latency = (self._node.get_clock().now() - Time.from_msg(msg.header.stamp)).nanoseconds / 1e9
        self._stats.inference_done(latency, model_s)
        log.debug(f"frame {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}: model {model_s * 1e3:.0f} ms, "
                  f"published {latency * 1e3:.0f} ms after its stamp")
