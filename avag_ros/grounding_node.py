"""The affordance grounding node: camera image + action sound -> function and dependency masks.

    ros2 run avag_ros grounding_node --ros-args -p checkpoint:=model.pt -r image:=/camera/image_raw
    python -m avag_ros.grounding_node --ros-args ...

A lifecycle node: configure loads the model and the audio source and creates the publishers and subscriptions,
activate starts the audio and the inference loop, deactivate stops them, cleanup destroys the entities and frees
the model. With `autostart` (default) it configures and activates itself. Inference runs on the newest image
only, in its own thread, and only while a sound event is active; image callbacks never wait for the model.
"""
from __future__ import annotations

import gc
import math
import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import NoReturn

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PolygonStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image

from avag_core import AffordancePredictor, build_model
from avag_core.audio import EXAMPLE_SECONDS
from avag_core.image import overlay
from avag_core.inference.backends import backend_class
from avag_core.inference.view_reuse import ViewReuse

from . import parameters
from .audio_sources import AudioSource, FileSource, MicrophoneSource, TopicSource
from .conversions import (check_compressed, check_image, compressed_to_rgb, image_to_rgb, largest_region_polygon,
                          mask_to_image, probability_to_image, rgb_to_bgr8)
from .depth_targets import DepthPin, DepthSettings, DepthTargets
from .memory import ReusedThread, model_blocks_mapped, return_freed_memory
from .ros_logging import forward_library_logs, stop_forwarding
from .shutdown import BoundedShutdown

try:  # rclpy has an events executor from Jazzy (7.1.4) on
    from rclpy.experimental import EventsExecutor
except ImportError:  # Humble
    EventsExecutor = None

MIN_AUDIO_S = 0.1  # no inference before the source has delivered this much
STATS_WINDOW_S = 10.0
# Matched image publishers but no image for this long: warn, because with default Fast DDS settings, raw images
# larger than its 512 KiB shared-memory segment (640x480 bgr8 is 900 KiB) are mostly lost over best effort between
# processes (README, "Large raw images").
SILENT_CAMERA_S = 5.0
FASTDDS_SHM_SEGMENT_BYTES = 512 * 1024
# A median latency below minus this means the image stamps and the node's clock disagree (sim time without
# /clock, unsynchronised machines); a little negative is ordinary clock jitter between machines.
STAMP_TOLERANCE_MS = 50.0
# A stop (SIGINT, SIGTERM, lifecycle shutdown) that takes longer than this plus the frame being inferred is forced
# (avag_ros.shutdown); `ros2 launch` waits 5 s after SIGINT before it escalates to SIGTERM.
SHUTDOWN_TIMEOUT_S = 4.0


# Functions, not constants: rclpy writes QoS overrides into the profile it is given, so a shared profile would
# carry one node's overrides into every node created after it in the same process.
def output_qos() -> QoSProfile:
    return QoSProfile(depth=5)


def camera_qos() -> QoSProfile:
    """Only the newest image matters: best effort, depth 1 (overridable with the standard QoS overrides)."""
    return QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)


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
                "frames_dropped": self.dropped, "frames_rejected": self.rejected, "inference_errors": self.failed,
            }


class GroundingNode(LifecycleNode):
    def __init__(self, node_name: str = "affordance_grounding", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._library_logs = forward_library_logs(self.get_logger())
        self._refused_parameters = parameters.declare(self)
        self.settings = parameters.read(self)
        self.add_pre_set_parameters_callback(parameters.coerce)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.predictor: AffordancePredictor | None = None
        self.audio_source: AudioSource | None = None
        self.stats = Statistics()
        self._model_description = "none"
        self._outputs: dict[str, object] = {}
        self._image_subscription = None
        # The newest image, waiting for the model, with the depth pairing it started on arrival (with depth.enabled)
        self._latest: tuple[Image | CompressedImage, DepthPin | None] | None = None
        self._wakeup = threading.Condition()
        self._stop = threading.Event()
        self._inference_thread = ReusedThread("affordance_inference")
        self._worker: Future | None = None  # the running inference loop, while active
        self._audio_retry_timer = None
        self._audio_failure: str | None = None  # the last audio error logged, so that a retry loop logs it once
        self._warned_large_images = False
        self._targets: DepthTargets | None = None
        self._activated_at = math.inf
        self.finalized = threading.Event()  # set by the lifecycle shutdown transition
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # On the steady clock: with use_sim_time and no /clock (a paused bag, a simulator not started yet) a
        # ROS-time timer would never fire, and diagnostics are what would tell the user so.
        self._diagnostics_timer = self.create_timer(1.0, self._publish_diagnostics,
                                                    clock=Clock(clock_type=ClockType.STEADY_TIME))
        if self.settings.autostart:
            try:
                if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                    self.trigger_activate()
            except KeyboardInterrupt:  # a Ctrl-C during start-up (avag_ros.shutdown); main() never gets this node
                self.destroy_node()
                raise

    # parameters ---------------------------------------------------------------------------------------------
    def _validate_parameters(self, changed: list) -> SetParametersResult:
        reason = parameters.check_change(self, changed)
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _apply_parameters(self, changed: list) -> None:
        for parameter in changed:
            self._refused_parameters.pop(parameter.name, None)
        self.settings = parameters.read(self)
        if self.predictor is not None:
            self.predictor.threshold = self.settings.threshold
            self.predictor.view_reuse.max_change = self.settings.reuse_max_change
            self.predictor.view_reuse.max_age_s = self.settings.reuse_max_age_s
        if self._targets is not None:
            self._targets.settings = depth_settings(self.settings)

    # lifecycle ----------------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        with model_blocks_mapped():  # a reload must not leave the old model's holes in the heap
            return self._configure()

    def _configure(self) -> TransitionCallbackReturn:
        settings = self.settings = parameters.read(self)
        log = self.get_logger()
        log.debug(f"configuring with {settings}")
        if self._refused_parameters:
            for reason in self._refused_parameters.values():
                log.error(f"cannot configure: {reason} (refused at start-up; set a valid value, then configure)")
            return TransitionCallbackReturn.FAILURE
        if reason := parameters.check_together(settings):
            log.error(f"cannot configure: {reason}")
            return TransitionCallbackReturn.FAILURE
        try:
            # Device, precision and the runtime package first: they fail in a second, the export in minutes.
            backend_class(settings.backend).resolve_target(settings.device, settings.precision)
        except ValueError as error:
            log.error(f"cannot configure: parameters 'backend', 'device', 'precision': {error}")
            return TransitionCallbackReturn.FAILURE
        try:
            if settings.checkpoint:
                self.predictor = AffordancePredictor.from_checkpoint(settings.checkpoint, settings.device,
                                                                     settings.precision, settings.threshold,
                                                                     settings.backend)
                self._model_description = f"{settings.checkpoint} ({self.predictor.config.backbone})"
            else:
                model = build_model(settings.model)  # an unknown preset fails here, before the warning
                log.warning("=" * 72)
                log.warning(f"NO CHECKPOINT: '{settings.model}' runs with RANDOM WEIGHTS. Its masks are "
                            "meaningless; set the 'checkpoint' parameter for real use.")
                log.warning("=" * 72)
                self.predictor = AffordancePredictor.from_model(model, settings.device, settings.precision,
                                                                settings.threshold, settings.backend)
                self._model_description = f"{settings.model} (RANDOM WEIGHTS)"
        except (ValueError, FileNotFoundError) as error:
            name = "checkpoint" if settings.checkpoint else "model"
            log.error(f"cannot configure: parameter '{name}': {error}")
            return TransitionCallbackReturn.FAILURE
        try:
            self.audio_source = self._make_audio_source(settings)
        except ValueError as error:
            log.error(f"cannot configure: parameter 'audio.{'file' if settings.audio_source == 'file' else 'source'}'"
                      f": {error}")
            self.predictor = None
            return TransitionCallbackReturn.FAILURE
        self.predictor.view_reuse = ViewReuse(settings.reuse_max_change, settings.reuse_max_age_s, STATS_WINDOW_S)
        self._create_entities(settings)
        return_freed_memory()  # what loading the checkpoint allocated on the way
        log.info(f"configured: model {self._model_description} on {self.predictor.backend.description} "
                 f"({settings.precision}), audio from {settings.audio_source}")
        return TransitionCallbackReturn.SUCCESS

    def _create_entities(self, settings: parameters.GroundingSettings) -> None:
        """Publishers and subscriptions live from configure to cleanup, as in rclcpp's lifecycle nodes; while the
        node is inactive, images are ignored and nothing is published. Recreating them on every activate would
        also make the middleware grow a new set of message pools each time."""
        qos_overrides = QoSOverridingOptions.with_default_policies()
        for topic, kind, enabled in (("affordance/function_mask", Image, True),
                                     ("affordance/dependency_mask", Image, True),
                                     ("affordance/function_region", PolygonStamped, True),
                                     ("affordance/function_probability", Image, settings.publish_probabilities),
                                     ("affordance/dependency_probability", Image, settings.publish_probabilities),
                                     ("affordance/overlay", Image, settings.publish_overlay)):
            if enabled:
                self._outputs[topic] = self.create_publisher(kind, topic, output_qos(),
                                                                qos_overriding_options=qos_overrides)
        kind, topic = (CompressedImage, "image/compressed") if settings.use_compressed else (Image, "image")
        self._image_subscription = self.create_subscription(kind, topic, self._on_image, camera_qos(),
                                                            qos_overriding_options=qos_overrides)
        if settings.depth_enabled:
            self._targets = DepthTargets(self, depth_settings(settings), qos_overrides)

    def _destroy_entities(self) -> None:
        if self._image_subscription is not None:
            self.destroy_subscription(self._image_subscription)
            self._image_subscription = None
        for publisher in self._outputs.values():
            self.destroy_publisher(publisher)
        self._outputs = {}
        if self._targets is not None:
            self._targets.destroy()
            self._targets = None

    def _make_audio_source(self, settings: parameters.GroundingSettings) -> AudioSource:
        buffer_s = max(settings.audio_window_s, settings.audio_hold_s) + 1.0
        now = lambda: self.get_clock().now().nanoseconds  # noqa: E731
        if settings.audio_source == "file":
            return FileSource(settings.audio_file, buffer_s, now)
        if settings.audio_source == "topic":
            return TopicSource(self, settings.audio_topic, settings.audio_info_topic, settings.audio_stamped,
                               buffer_s, now)
        return MicrophoneSource(settings.audio_device, settings.audio_sample_rate, settings.audio_channels, buffer_s,
                                now)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        settings = self.settings
        self._activated_at = time.monotonic()
        self._start_audio()
        self._audio_retry_timer = self.create_timer(settings.audio_retry_s, self._retry_audio)
        self._stop.clear()
        self._worker = self._inference_thread.submit(self._run_worker)
        self.get_logger().info(f"active: listening on {self._image_subscription.topic_name}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inference()
        if self._audio_retry_timer is not None:
            self.destroy_timer(self._audio_retry_timer)
            self._audio_retry_timer = None
        if self.audio_source is not None:
            self.audio_source.stop()
        if self._latest is not None:
            self._release_depth(self._latest[1])
        self._latest = None
        return_freed_memory()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_entities()
        device = self.predictor.device if self.predictor is not None else None
        self.predictor = None
        self.audio_source = None
        self._model_description = "none"
        gc.collect()  # the old model must be gone before a configure builds the next one
        if device is not None and device.type == "cuda":
            torch.cuda.empty_cache()
        return_freed_memory()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._worker is not None:
            self.on_deactivate(state)
        self.finalized.set()
        return self.on_cleanup(state)

    def _stop_inference(self) -> None:
        self._stop.set()
        with self._wakeup:
            self._wakeup.notify_all()
        if self._worker is not None:
            self._worker.result()
            self._worker = None

    def destroy_node(self) -> None:
        self._stop_inference()  # a node destroyed while active must not leave its loop waiting for images
        self._inference_thread.close()
        stop_forwarding(self._library_logs)
        super().destroy_node()

    # audio --------------------------------------------------------------------------------------------------
    def _start_audio(self) -> None:
        try:
            self.audio_source.start()
        except ValueError as error:
            if str(error) != self._audio_failure:  # once per kind of failure; /diagnostics carries it meanwhile
                self.get_logger().error(f"audio source failed: {error}; retrying every "
                                        f"{self.settings.audio_retry_s:g} s, quietly while it fails the same way")
            self._audio_failure = str(error)
            return
        if self._audio_failure is not None:
            self.get_logger().info(f"audio source recovered after: {self._audio_failure}")
            self._audio_failure = None

    def _retry_audio(self) -> None:
        source = self.audio_source
        if source is not None and not source.healthy() and not source.health.startswith("waiting"):
            self._start_audio()

    def sound_event_active(self) -> bool:
        """True while the audio level exceeded the minimum within the last hold_s seconds."""
        buffer = self.audio_source.buffer
        if buffer.written < MIN_AUDIO_S * buffer.sample_rate:
            return False
        level = buffer.level_db(self.settings.audio_hold_s)
        if math.isnan(level):
            raise ValueError("the audio contains NaN or infinite samples")
        return level >= self.settings.audio_min_level_db

    def _sound_event_now(self) -> bool:
        """For diagnostics, which also run before any image arrives: NaN audio counts as no event."""
        try:
            return self.audio_source is not None and self.sound_event_active()
        except ValueError:
            return False

    # images and inference -----------------------------------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        if self._worker is None:  # inactive
            return
        try:
            check_compressed(msg) if isinstance(msg, CompressedImage) else check_image(msg)
        except ValueError as error:
            self.stats.count("rejected")
            self.get_logger().warning(f"dropping image: {error}", throttle_duration_sec=2.0)
            return
        if not self._warned_large_images and isinstance(msg, Image) and len(msg.data) > FASTDDS_SHM_SEGMENT_BYTES \
                and fastdds_default_transports():
            self._warned_large_images = True
            self.get_logger().warning(
                f"raw images of {len(msg.data) / 1024:.0f} KiB arrive over Fast DDS's default transports, whose "
                "shared-memory segment is 512 KiB: on best effort most such images are lost between processes. "
                "Export FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA in every process on the topic (the camera driver "
                "too), or set use_compressed: true (README, 'Large raw images')")
        # Paired from now on, not after inference: by then a fast depth stream has moved on (depth_targets).
        targets = self._targets
        pin = targets.buffer.pin(rclpy.time.Time.from_msg(msg.header.stamp).nanoseconds) if targets else None
        with self._wakeup:
            replaced, self._latest = self._latest, (msg, pin)
            self.stats.image_received(replaced_unprocessed=replaced is not None)
            self._wakeup.notify()
        if replaced is not None:
            self._release_depth(replaced[1])

    def _next_image(self) -> tuple[Image | CompressedImage, DepthPin | None] | None:
        with self._wakeup:
            while self._latest is None and not self._stop.is_set():
                self._wakeup.wait()
            frame, self._latest = self._latest, None
            return frame

    def _release_depth(self, pin: DepthPin | None) -> None:
        if pin is not None and self._targets is not None:
            self._targets.buffer.release(pin)

    def _run_worker(self) -> None:
        next_allowed = 0.0
        while not self._stop.is_set():
            rate = self.settings.max_rate_hz
            delay = next_allowed - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            frame = self._next_image()
            if frame is None:
                break
            next_allowed = time.monotonic() + (1.0 / rate if rate > 0 else 0.0)
            msg, depth_pin = frame
            try:
                self._process(msg, depth_pin)
            except Exception as error:  # the thread must survive anything one frame can do
                if not self.context.ok():  # the process is going down under this frame: nothing failed
                    return
                self.stats.count("failed")
                self.get_logger().error(f"inference failed on one frame: {error!r}", throttle_duration_sec=5.0)
            finally:
                self._release_depth(depth_pin)

    def _process(self, msg: Image | CompressedImage, depth_pin: DepthPin | None) -> None:
        log = self.get_logger()
        try:
            rgb = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
        except ValueError as error:
            self.stats.count("rejected")
            log.warning(f"dropping image: {error}", throttle_duration_sec=2.0)
            return
        settings, source, predictor = self.settings, self.audio_source, self.predictor
        try:
            sound_active = self.sound_event_active()
        except ValueError as error:
            self.stats.count("rejected")
            log.warning(f"skipping frame: {error}", throttle_duration_sec=2.0)
            return
        if not sound_active:
            if settings.publish_when_silent:
                empty = np.zeros(rgb.shape[:2], bool)
                self._publish(msg, rgb, empty, empty, None, depth_pin)
            return
        audio = source.buffer.latest(settings.audio_window_s, align_s=EXAMPLE_SECONDS)
        started = time.perf_counter()
        try:
            prediction = predictor.predict(rgb, audio, source.sample_rate)
        except ValueError as error:
            self.stats.count("rejected")
            log.warning(f"skipping frame: {error}", throttle_duration_sec=2.0)
            return
        model_s = time.perf_counter() - started
        self._publish(msg, rgb, prediction.function_mask, prediction.dependency_mask, prediction, depth_pin)
        latency = (self.get_clock().now() - rclpy.time.Time.from_msg(msg.header.stamp)).nanoseconds / 1e9
        self.stats.inference_done(latency, model_s)
        log.debug(f"frame {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}: model {model_s * 1e3:.0f} ms, "
                  f"published {latency * 1e3:.0f} ms after its stamp")

    def _publish(self, msg, rgb: np.ndarray, function_mask: np.ndarray, dependency_mask: np.ndarray,
                 prediction, depth_pin: DepthPin | None) -> None:
        header = msg.header
        publishers = self._outputs
        publishers["affordance/function_mask"].publish(mask_to_image(function_mask, header))
        publishers["affordance/dependency_mask"].publish(mask_to_image(dependency_mask, header))
        publishers["affordance/function_region"].publish(largest_region_polygon(function_mask, header))
        if "affordance/function_probability" in publishers and prediction is not None:
            publishers["affordance/function_probability"].publish(
                probability_to_image(prediction.function_prob, header))
            publishers["affordance/dependency_probability"].publish(
                probability_to_image(prediction.dependency_prob, header))
        overlay_publisher = publishers.get("affordance/overlay")
        if overlay_publisher is not None and overlay_publisher.get_subscription_count() > 0:  # costly to draw
            overlay_publisher.publish(rgb_to_bgr8(overlay(rgb, function_mask, dependency_mask), header))
        # 3D last: whatever the depth does, the frame's 2D outputs are out.
        if depth_pin is not None and prediction is not None:
            self._targets.publish(header, {"function": function_mask, "dependency": dependency_mask}, depth_pin)

    # diagnostics --------------------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        values = self.stats.snapshot()
        source = self.audio_source
        state = "active" if self._worker is not None else ("inactive" if self.predictor is not None
                                                             else "unconfigured")
        audio_health = source.health if source is not None else "not configured"
        audio_level = source.buffer.level_db(self.settings.audio_hold_s) if source is not None else math.nan
        subscription = self._image_subscription
        image_publishers = subscription.get_publisher_count() if subscription is not None else 0
        waited_s = time.monotonic() - max(self._activated_at, self.stats.last_received)
        sim_time = self.get_parameter("use_sim_time").value
        values.update({
            "latency_clock": "ROS sim time (/clock)" if sim_time else "ROS system time",
            "image_topic": subscription.topic_name if subscription is not None else "none",
            "image_publishers": image_publishers,
            "lifecycle_state": state, "model": self._model_description,
            "device": self.predictor.backend.description if self.predictor is not None else "none",
            "precision": self.settings.precision, "audio_source": self.settings.audio_source,
            "audio_health": audio_health, "audio_level_db": audio_level,
            "sound_event_active": self._sound_event_now(),
        })
        if self.predictor is not None:
            values.update(self.predictor.view_reuse.diagnostics())
        if state == "unconfigured":
            level, message = DiagnosticStatus.ERROR, "not configured (see the log for the reason)"
        elif state == "active" and image_publishers > 0 and waited_s > SILENT_CAMERA_S:
            level, message = DiagnosticStatus.WARN, (
                f"no image for {waited_s:.0f} s from {image_publishers} matched publisher(s); raw images over "
                "512 KiB are lost over best-effort Fast DDS between processes unless every process sets "
                "FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA")
        elif values["latency_median_ms"] < -STAMP_TOLERANCE_MS:
            level, message = DiagnosticStatus.WARN, (
                f"image stamps are {-values['latency_median_ms'] / 1000:.3g} s ahead of the node's "
                f"{values['latency_clock']}, so latency is meaningless: "
                + ("use_sim_time is set but /clock is not moving, or the camera stamps wall time" if sim_time
                   else "the camera's clock and this machine's disagree"))
        elif source is not None and not source.health.startswith("ok") and state == "active":
            level, message = DiagnosticStatus.WARN, f"audio: {audio_health}"
        elif "RANDOM" in self._model_description:
            level, message = DiagnosticStatus.WARN, "running with random weights"
        else:
            level, message = DiagnosticStatus.OK, state
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: affordance grounding", message=message,
                                  hardware_id=values["device"],
                                  values=[KeyValue(key=k, value=f"{v:.2f}" if isinstance(v, float) else str(v))
                                          for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        if self._targets is not None:
            array.status.append(self._targets.diagnostic_status(f"{self.get_name()}: 3D"))
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)


def fastdds_default_transports() -> bool:
    """Whether this process talks over Fast DDS with its default transports (no LARGE_DATA, no XML profile)."""
    rmw = os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    transports = os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "DEFAULT").upper()
    profiles = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE")
    return rmw.startswith("rmw_fastrtps") and transports == "DEFAULT" and not profiles


def depth_settings(settings: parameters.GroundingSettings) -> DepthSettings:
    return DepthSettings(settings.depth_max_offset_s, settings.depth_min_points, settings.depth_min_m,
                         settings.depth_max_m, settings.depth_max_cloud_points, settings.depth_erode_px)


def create_executor(context=None) -> Executor:
    """The executor the node runs on. rclpy's events executor dispatches from C++ instead of rebuilding a wait set
    in Python on every wake-up: about 1 ms less overhead per frame than SingleThreadedExecutor
    (bench/node_latency.py), which is a fifth of the node's budget. Humble falls back to the latter."""
    if EventsExecutor is None:
        return SingleThreadedExecutor(context=context)
    return EventsExecutor(context=context)


def main(args: list[str] | None = None) -> NoReturn:
    # rclpy's own signal handlers shut the context down the moment Ctrl-C arrives, while the inference thread
    # may be publishing a frame into it. Here a signal during start-up interrupts the model load or export (which
    # cleans up after itself), and once running only asks the loop to end; the node is then taken down in order,
    # within SHUTDOWN_TIMEOUT_S whatever happens (avag_ros.shutdown). A lifecycle `shutdown` ends it too.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    shutdown = BoundedShutdown("grounding_node", SHUTDOWN_TIMEOUT_S)
    node = executor = None
    try:
        node = GroundingNode()
        shutdown.name = node.get_logger().name
        executor = create_executor()
        executor.add_node(node)
        shutdown.running()
        while not shutdown.requested.is_set() and not node.finalized.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.2)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # KeyboardInterrupt: a signal during start-up, which avag_ros.shutdown turns into one
    finally:
        # the inference thread finishes its frame
        shutdown.begin(extra_s=node.stats.longest_model_s() if node is not None else 0.0)
        # The executor first: it stops dispatching and detaches its middleware callbacks while every entity still
        # exists, so that nothing the DDS threads go on receiving can reach an entity being destroyed.
        if executor is not None:
            shutdown.set_step("stopping the executor")
            executor.shutdown(timeout_sec=SHUTDOWN_TIMEOUT_S)
        if node is not None:
            shutdown.set_step("stopping inference and audio")
            if node._worker is not None:
                node.on_deactivate(None)
            shutdown.set_step("destroying the node")
            node.destroy_node()
        shutdown.set_step("shutting down the ROS context")
        rclpy.try_shutdown()
    shutdown.exit(0)


if __name__ == "__main__":
    main()
