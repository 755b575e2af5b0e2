"""The affordance grounding node: camera image + action sound -> function and dependency masks.

    ros2 run avag_ros grounding_node --ros-args -p checkpoint:=model.pt -r image:=/camera/image_raw
    python -m avag_ros.grounding_node --ros-args ...

A lifecycle node: configure loads the model and the audio source and creates the publishers and subscriptions,
activate starts the audio and the inference loop, deactivate stops them, cleanup destroys the entities and frees
the model. With `autostart` (default) it configures and activates itself. Inference runs on the newest image
only, in its own thread (avag_ros.inference_loop), and only while a sound event is active; image callbacks never
wait for the model.
"""
from __future__ import annotations

import itertools
import math
import threading
import time
from concurrent.futures import Future
from typing import NoReturn

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image

from avag_core import AffordancePredictor

from . import parameters
from .audio_setup import AudioRunner, make_audio_source
from .audio.sources import AudioSource
from .depth.pairing import DepthInput
from .diagnostics import grounding_status, grounding_values
from .runtime.fastdds import LargeImageWarning
from .ground_next_sound import NextSoundServer
from .ground_service import GroundService
from .inference_loop import InferenceLoop, accept_frame
from .runtime.lifecycle_requests import refuse_unavailable_transitions
from .runtime.memory import model_blocks_mapped, return_freed_memory
from .model_loading import free_dropped_model, load_predictor
from .runtime.node_process import run_node_process
from .outputs import Outputs
from .runtime.qos import camera_qos
from .runtime.ros_logging import forward_library_logs, stop_forwarding
from .runtime.threads import ReusedThread
from .audio.sound_events import SoundEvents
from .node_statistics import Statistics

class GroundingNode(LifecycleNode):
    def __init__(self, node_name: str = "affordance_grounding", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        refuse_unavailable_transitions(self)  # rclpy 7 (Jazzy) raises where rclpy 9 (Kilted) answers: see there
        self._library_logs = forward_library_logs(self.get_logger())
        self._refused_parameters = parameters.declare(self)
        self.settings = parameters.read(self)
        self.add_pre_set_parameters_callback(parameters.coerce)
        self.add_on_set_parameters_callback(lambda changed: parameters.validate_change(self, changed))
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.predictor: AffordancePredictor | None = None
        self.audio_source: AudioSource | None = None
        self.sound_events: SoundEvents | None = None  # the audio source's events, from configure to cleanup
        self._event_ids = itertools.count(1)  # over the node's life, so that ids only increase across reconfigures
        self.stats = Statistics()
        self._model_description = "none"
        self._outputs: Outputs | None = None
        self._image_subscription = None
        self._depth: DepthInput | None = None  # with depth.enabled, from configure to cleanup
        self._loop: InferenceLoop | None = None  # from configure to cleanup
        self._ground_service: GroundService | None = None  # ~/ground, from configure to cleanup
        self._next_sound: NextSoundServer | None = None  # ~/ground_next_sound, on ~/ground's helper node
        self._inference_thread = ReusedThread("affordance_inference")
        self._renewal_thread = ReusedThread("keyframe_renewal")  # every configuration's view reuse renews on it
        self._worker: Future | None = None  # the running inference loop, while active
        self._audio = AudioRunner(self)
        self._large_images = LargeImageWarning(self.get_logger())
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
            except KeyboardInterrupt:  # a Ctrl-C during start-up (runtime.shutdown); main() never gets this node
                self.destroy_node()
                raise

    # parameters ---------------------------------------------------------------------------------------------
    def _apply_parameters(self, changed: list) -> None:
        for parameter in changed:
            self._refused_parameters.pop(parameter.name, None)
        self.settings = parameters.read(self)
        if self.predictor is not None:
            self.predictor.threshold = self.settings.threshold
            self.predictor.view_reuse.max_change = self.settings.reuse_max_change
            self.predictor.view_reuse.max_age_s = self.settings.reuse_max_age_s
        if self._outputs is not None:
            self._outputs.apply(self.settings)

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
            self.predictor, self._model_description = load_predictor(settings, log, self._renewal_thread.submit)
        except ValueError as error:
            log.error(f"cannot configure: {error}")
            return TransitionCallbackReturn.FAILURE
        try:
            self.audio_source = make_audio_source(self, settings)
        except ValueError as error:
            log.error(f"cannot configure: parameter 'audio.{'file' if settings.audio_source == 'file' else 'source'}'"
                      f": {error}")
            self.predictor = None
            return TransitionCallbackReturn.FAILURE
        source = self.audio_source
        self.sound_events = SoundEvents(lambda: source.buffer, self._event_ids)
        self._create_entities(settings)
        self._loop = InferenceLoop(self, lambda: self.settings, self.predictor, self.sound_events, self._outputs,
                                   self.stats, self._depth)
        self._ground_service = GroundService(self, self._loop.requests)
        self._next_sound = NextSoundServer(self._ground_service.helper,
                                           self.resolve_service_name("~/ground_next_sound"), self.sound_events,
                                           lambda: self.settings, self._loop.requests,
                                           lambda: self.get_clock().now().nanoseconds)
        return_freed_memory()  # what loading the checkpoint allocated on the way
        log.info(f"configured: model {self._model_description} on {self.predictor.backend.description} "
                 f"({settings.precision}), audio from {settings.audio_source}")
        return TransitionCallbackReturn.SUCCESS

    def _create_entities(self, settings: parameters.GroundingSettings) -> None:
        """From configure to cleanup (avag_ros.outputs); the image subscription ignores images while inactive."""
        qos_overrides = QoSOverridingOptions.with_default_policies()
        self._outputs = Outputs(self, settings, qos_overrides)
        kind, topic = (CompressedImage, "image/compressed") if settings.use_compressed else (Image, "image")
        self._image_subscription = self.create_subscription(kind, topic, self._on_image, camera_qos(),
                                                            qos_overriding_options=qos_overrides)
        self._depth = DepthInput(self, qos_overrides) if settings.depth_enabled else None

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._activated_at = time.monotonic()
        super().on_activate(state)  # enables the managed publishers, before the loop can publish
        self._audio.start(self.audio_source, self.settings.audio_retry_s)
        self._loop.prepare()
        self._worker = self._inference_thread.submit(self._loop.run)
        self._loop.requests.open()
        self._next_sound.goals.open()
        self.get_logger().info(f"active: listening on {self._image_subscription.topic_name}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._loop is not None:
            self._next_sound.goals.close("the node was deactivated")  # first: a goal whose grounding waits too
            self._loop.requests.close("the node is not active")
        self._stop_inference()
        self._audio.stop()
        if self._loop is not None:
            self._loop.discard_waiting()
        super().on_deactivate(state)  # disables the managed publishers, once the loop has stopped publishing
        return_freed_memory()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_ground_service()
        if self._image_subscription is not None:
            self.destroy_subscription(self._image_subscription)
        if self._outputs is not None:
            self._outputs.destroy()
        if self._depth is not None:
            self._depth.destroy()
        self._loop = self._outputs = self._image_subscription = self._depth = None
        device = self.predictor.device if self.predictor is not None else None
        if self.predictor is not None and self.predictor.view_reuse is not None:
            self.predictor.view_reuse.close()  # a keyframe renewal in progress still holds the model
        self.predictor = self.audio_source = self.sound_events = None
        self._model_description = "none"
        free_dropped_model(device)
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._worker is not None:
            self.on_deactivate(state)
        self.finalized.set()
        return self.on_cleanup(state)

    def stop_activity(self) -> None:
        """Deactivate if active: the process's ordered stop (runtime.node_process) needs no lifecycle client."""
        if self._worker is not None:
            self.on_deactivate(None)

    def _stop_inference(self) -> None:
        if self._worker is not None:
            self._loop.stop()
            self._worker.result()
            self._worker = None

    def _destroy_ground_service(self) -> None:
        """~/ground_next_sound, then ~/ground and the helper node both live on."""
        if self._next_sound is not None:
            self._next_sound.destroy()
            self._next_sound = None
        if self._ground_service is not None:
            self._ground_service.destroy()
            self._ground_service = None

    def destroy_node(self) -> None:
        self._stop_inference()  # a node destroyed while active must not leave its loop waiting for images
        self._audio.stop()  # nor its file player or microphone stream running
        self._destroy_ground_service()  # its thread spins a helper node on this node's context
        self._inference_thread.close()
        self._renewal_thread.close()
        stop_forwarding(self._library_logs)
        super().destroy_node()

    def _on_image(self, msg: Image | CompressedImage) -> None:
        """Every image delivered counts once in /diagnostics: rejected if malformed, whatever the state; else taken
        by the loop while active, or ignored. Ignored not only while inactive: the events executor still delivers
        what the subscription had received before cleanup destroyed it."""
        if self._worker is not None:
            if self._loop.offer(msg) and isinstance(msg, Image):
                self._large_images.check(msg)
        elif accept_frame(msg, self.stats, self.get_logger()):
            self.stats.count("ignored_inactive")

    # diagnostics --------------------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        state = "active" if self._worker is not None else ("inactive" if self.predictor is not None
                                                             else "unconfigured")
        sim_time = self.get_parameter("use_sim_time").value
        values = grounding_values(self.stats.snapshot(), self.settings, state, self._model_description,
                                  self.predictor, self.audio_source, self.sound_events, self._image_subscription,
                                  sim_time, self.get_clock().now().nanoseconds)
        waited_s = time.monotonic() - max(self._activated_at, self.stats.last_received)
        array = DiagnosticArray(status=[grounding_status(f"{self.get_name()}: affordance grounding", values,
                                                         waited_s, sim_time)])
        if self._outputs is not None:
            array.status.extend(self._outputs.diagnostic_statuses(self.get_name()))
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)


def main(args: list[str] | None = None) -> NoReturn:
    run_node_process(GroundingNode, args)

if __name__ == "__main__":
    main()
