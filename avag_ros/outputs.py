"""Everything the node publishes per frame: the publishers, created from one table, and the messages built from
one frame's result. A new output is one more entry in OUTPUTS; the 3D ones come from avag_ros.depth.targets, from
the depth the inference loop paired with the frame.

Publishers and subscriptions live from configure to cleanup, as in rclcpp's lifecycle nodes; while the node is
inactive nothing is published. Recreating them on every activate would also make the middleware grow a new set
of message pools each time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from avag_interfaces.msg import AffordanceGrounding
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PolygonStamped
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from avag_core.image import overlay

from .audio.sound_events import SILENCE_DB
from .depth.pairing import DepthPin, DepthUnavailable
from .depth.targets import DepthSettings, DepthTargets
from .messages.grounding import Heard, grounding_message
from .messages.images import largest_region_polygon, mask_to_image, probability_to_image, rgb_to_bgr8
from .messages.targets import transforms
from .parameters import GroundingSettings
from .runtime.qos import output_qos, tf_qos


@dataclass(frozen=True)
class FrameResult:
    """One frame's outcome. Without a sound event the masks are empty and there is no prediction."""
    header: Header
    rgb: np.ndarray
    function_mask: np.ndarray
    dependency_mask: np.ndarray
    prediction: object | None  # avag_core's Prediction
    sound_event_active: bool = False
    audio_level_db: float = SILENCE_DB  # the loudest 50 ms over audio.hold_s
    heard: Heard = Heard()  # the sound event and the audio the masks were grounded on
    depth: DepthPin | None = None  # with depth.enabled: the depth image paired with the frame since its arrival


@dataclass(frozen=True)
class Output:
    topic: str
    kind: type
    build: Callable[[FrameResult], object | None]  # None: nothing to publish for this frame
    enabled: Callable[[GroundingSettings], bool] = lambda settings: True
    on_demand: bool = False  # costly to build: only while someone subscribes


def _probability(name: str) -> Callable[[FrameResult], Image | None]:
    def build(frame: FrameResult) -> Image | None:
        prediction = frame.prediction
        return None if prediction is None else probability_to_image(getattr(prediction, name), frame.header)
    return build


# In publishing order
OUTPUTS = (
    Output("affordance/function_mask", Image, lambda frame: mask_to_image(frame.function_mask, frame.header)),
    Output("affordance/dependency_mask", Image, lambda frame: mask_to_image(frame.dependency_mask, frame.header)),
    Output("affordance/function_region", PolygonStamped,
           lambda frame: largest_region_polygon(frame.function_mask, frame.header)),
    Output("affordance/function_probability", Image, _probability("function_prob"),
           lambda settings: settings.publish_probabilities),
    Output("affordance/dependency_probability", Image, _probability("dependency_prob"),
           lambda settings: settings.publish_probabilities),
    Output("affordance/overlay", Image,
           lambda frame: rgb_to_bgr8(overlay(frame.rgb, frame.function_mask, frame.dependency_mask), frame.header),
           lambda settings: settings.publish_overlay, on_demand=True),
)


def depth_settings(settings: GroundingSettings) -> DepthSettings:
    return DepthSettings(settings.depth_max_offset_s, settings.depth_min_points, settings.depth_min_m,
                         settings.depth_max_m, settings.depth_max_cloud_points, settings.depth_erode_px)


class Outputs:
    """The publishers of one configuration, with depth.enabled the 3D ones. All are managed (lifecycle) publishers:
    they publish only while the node is active."""

    def __init__(self, node, settings: GroundingSettings, qos_overrides) -> None:
        self._node = node
        self._publishers = [(output, node.create_lifecycle_publisher(output.kind, output.topic, output_qos(),
                                                                     qos_overriding_options=qos_overrides))
                            for output in OUTPUTS if output.enabled(settings)]
        self.depth = DepthTargets(node, depth_settings(settings), qos_overrides) if settings.depth_enabled else None
        self._grounding = node.create_lifecycle_publisher(AffordanceGrounding, "affordance/grounding", output_qos(),
                                                          qos_overriding_options=qos_overrides)
        self._tf = self._tf_prefix = None
        if self.depth is not None and settings.tf_enabled:
            self._tf = node.create_lifecycle_publisher(TFMessage, "/tf", tf_qos())
            self._tf_prefix = settings.tf_prefix

    def apply(self, settings: GroundingSettings) -> None:
        """Settings changed while configured."""
        if self.depth is not None:
            self.depth.settings = depth_settings(settings)

    def locate(self, header: Header, function_mask: np.ndarray, dependency_mask: np.ndarray,
               pin: DepthPin | None) -> tuple[Header | None, dict | None]:
        """The 3D of a frame outside the stream (an action's result) from the depth `pin` holds, published nowhere:
        the depth frame's header and the regions, or (None, None) without 3D."""
        if self.depth is None or pin is None:
            return None, None
        try:
            return self.depth.locate(header, {"function": function_mask, "dependency": dependency_mask}, pin)
        except DepthUnavailable:
            return None, None

    def publish(self, frame: FrameResult) -> None:
        for output, publisher in self._publishers:
            if output.on_demand and publisher.get_subscription_count() == 0:
                continue
            message = output.build(frame)
            if message is not None:
                publisher.publish(message)
        # 3D last: whatever the depth does, the frame's 2D outputs are out.
        depth_header, regions = None, None
        prediction = frame.prediction
        if frame.depth is not None and self.depth is not None and prediction is not None:
            three_d = self.depth.publish(frame.header, {"function": frame.function_mask,
                                                        "dependency": frame.dependency_mask}, frame.depth)
            if three_d is not None:
                depth_header, regions = three_d
        # The whole frame in one message, after its parts: a planner that reads it finds the single topics out too
        self._grounding.publish(grounding_message(
            frame.header, frame.function_mask, frame.dependency_mask,
            prediction.function_prob if prediction is not None else None,
            prediction.dependency_prob if prediction is not None else None,
            frame.sound_event_active, frame.audio_level_db, frame.heard, regions,
            depth_header.frame_id if depth_header is not None else ""))
        if self._tf is not None and regions is not None:
            frames = transforms(regions, depth_header, self._tf_prefix)
            if frames is not None:
                self._tf.publish(frames)

    def diagnostic_statuses(self, node_name: str) -> list[DiagnosticStatus]:
        return [self.depth.diagnostic_status(f"{node_name}: 3D")] if self.depth is not None else []

    def destroy(self) -> None:
        for publisher in [publisher for _, publisher in self._publishers] + [self._grounding, self._tf]:
            if publisher is not None:
                self._node.destroy_lifecycle_publisher(publisher)
        self._publishers, self._grounding, self._tf = [], None, None
        if self.depth is not None:
            self.depth.destroy()
            self.depth = None
