"""The newest-frame slot and the loop that takes each frame through conversion, the sound event, the predictor and
the outputs, one way. Image callbacks only ever replace the frame in the slot, so they never wait for the model;
a frame is pinned to its depth when it enters the slot (with depth.enabled), and the loop releases the pin when
the frame is done. The loop runs in the node's inference thread, one frame at a time, at most `max_rate_hz`.
Between two frames it answers what waits in `requests`: `~/ground` requests (avag_ros.ground_service) and
`~/ground_next_sound` events (avag_ros.ground_next_sound), before the next frame and whatever the rate limit.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np
from rclpy.time import Time

from avag_core import AffordancePredictor

from .messages.images import Frame, check_frame, frame_to_rgb
from .depth.pairing import DepthInput, DepthPin
from .ground_next_sound import EventGrounding
from .ground_service import GroundQueue, ground
from .messages.grounding import Heard, grounding_message
from .outputs import FrameResult, Outputs
from .parameters import GroundingSettings
from .audio.sound_events import SoundEvents, loudest_level_db
from .node_statistics import Statistics


def accept_frame(msg: Frame, stats: Statistics, log) -> bool:
    """False, counted as rejected and logged, for a message whose fields do not make an image; reads no pixel."""
    try:
        check_frame(msg)
    except ValueError as error:
        stats.count("rejected")
        log.warning(f"dropping image: {error}", throttle_duration_sec=2.0)
        return False
    return True


class InferenceLoop:
    """One configuration's frames: built at configure, run from activate to deactivate. `settings` gives the
    node's current settings, which parameter changes replace while the loop runs."""

    def __init__(self, node, settings: Callable[[], GroundingSettings], predictor: AffordancePredictor,
                 events: SoundEvents, outputs: Outputs, stats: Statistics, depth: DepthInput | None = None) -> None:
        self._node = node  # its logger, clock and context
        self._settings, self._predictor, self._events, self._outputs, self._stats = (settings, predictor, events,
                                                                                      outputs, stats)
        self._depth = depth  # with depth.enabled
        self._latest: tuple[Frame, DepthPin | None] | None = None
        self._newest: Frame | None = None  # the last accepted frame: a request's "newest" image
        self._wakeup = threading.Condition()
        self._stop = threading.Event()
        self.requests = GroundQueue(self._wake)

    def offer(self, msg: Frame) -> bool:
        """Puts a frame in the slot, in place of one still waiting; False if the image is refused."""
        if not accept_frame(msg, self._stats, self._node.get_logger()):
            return False
        pin = self._depth.pin(msg.header) if self._depth is not None else None
        self._newest = msg
        with self._wakeup:
            replaced, self._latest = self._latest, (msg, pin)
            self._stats.image_received(replaced_unprocessed=replaced is not None)
            self._wakeup.notify()
        if replaced is not None:
            _release(replaced[1])
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
            _release(frame[1])

    def _next_frame(self, not_before: float) -> tuple[Frame, DepthPin | None] | None:
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
                if isinstance(pending, EventGrounding):
                    self._ground_event(pending)
                else:
                    ground(pending, self._newest, self._predictor, self._settings().audio_min_level_db)
            except Exception as error:  # the thread must survive anything one request can do
                self._node.get_logger().error(f"grounding a request failed: {error!r}", throttle_duration_sec=5.0)
                pending.answer(False, f"inference failed: {error!r}")

    def _ground_event(self, job: EventGrounding) -> None:
        """A ~/ground_next_sound event: its clip on the newest camera frame, with the 3D of that frame's depth."""
        newest = self._newest
        if newest is None:
            job.answer(False, "no camera frame received yet")
            return
        # pinned before the model runs: a slow model would otherwise find the frame's depth gone from the buffer
        pin = self._depth.pin(newest.header) if self._depth is not None else None
        try:
            rgb = frame_to_rgb(newest)
            prediction = self._predictor.predict(rgb, job.clip.samples, job.clip.sample_rate)
            depth_header, regions = self._outputs.locate(newest.header, prediction.function_mask,
                                                         prediction.dependency_mask, pin)
        except ValueError as error:
            job.answer(False, str(error))
            return
        finally:
            _release(pin)
        clip, event = job.clip, job.event
        grounding = grounding_message(
            newest.header, prediction.function_mask, prediction.dependency_mask, prediction.function_prob,
            prediction.dependency_prob, True, loudest_level_db(clip.samples, clip.sample_rate),
            Heard(event.id, clip.onset_ns, clip.start_ns, clip.end_ns), regions,
            depth_header.frame_id if depth_header is not None else "")
        job.answer(True, f"sound event {event.id}: {clip.samples.size / clip.sample_rate:.2f} s of its audio grounded "
                         f"in the newest camera frame ({rgb.shape[1]}x{rgb.shape[0]})", grounding)

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
                _release(depth_pin)

    def _process(self, msg: Frame, depth_pin: DepthPin | None) -> None:
        log = self._node.get_logger()
        try:  # first, so that a frame that cannot be decoded is counted whatever the sound
            rgb = frame_to_rgb(msg)
        except ValueError as error:
            self._stats.count("rejected")
            log.warning(f"dropping image: {error}", throttle_duration_sec=2.0)
            return
        settings, predictor = self._settings(), self._predictor
        state = self._events.update(settings.audio_min_level_db, settings.audio_hold_s,
                                    settings.audio_change_threshold)
        if state.audio_error is not None:
            self._stats.count("rejected")
            log.warning(f"skipping frame: {state.audio_error}", throttle_duration_sec=2.0)
            return
        event = state.event
        grounded = state.ready(settings.audio_min_event_s, settings.audio_change_threshold)
        if not grounded and not settings.publish_when_silent:
            return
        if not grounded:  # publish_when_silent: no event, one not audio.min_event_s long yet, or one changing
            empty = np.zeros(rgb.shape[:2], bool)
            heard = Heard(event.id, event.onset_ns) if event is not None else Heard()
            self._outputs.publish(FrameResult(msg.header, rgb, empty, empty, None, event is not None,
                                              state.level_db, heard, depth_pin))
            return
        started = time.perf_counter()
        try:
            clip = self._events.clip(event, state.analysed, settings.audio_window_s)
            prediction = predictor.predict(rgb, clip.samples, clip.sample_rate)
        except ValueError as error:
            self._stats.count("rejected")
            log.warning(f"skipping frame: {error}", throttle_duration_sec=2.0)
            return
        model_s = time.perf_counter() - started
        self._outputs.publish(FrameResult(msg.header, rgb, prediction.function_mask, prediction.dependency_mask,
                                          prediction, True, state.level_db,
                                          Heard(event.id, clip.onset_ns, clip.start_ns, clip.end_ns), depth_pin))
        latency = (self._node.get_clock().now() - Time.from_msg(msg.header.stamp)).nanoseconds / 1e9
        self._stats.inference_done(latency, model_s)
        log.debug(f"frame {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}: event {event.id}, "
                  f"{clip.samples.size / clip.sample_rate:.2f} s of its audio, model {model_s * 1e3:.0f} ms, "
                  f"published {latency * 1e3:.0f} ms after its stamp")


def _release(pin: DepthPin | None) -> None:
    if pin is not None:
        pin.release()
