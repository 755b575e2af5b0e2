"""One frame's result as a single avag_interfaces/AffordanceGrounding, and its 3D targets as TF frames.

numpy -> messages, like avag_ros.messages.images: the masks are built by the same functions as the single topics', so
the combined message and the single topics carry the same bytes. Nothing here publishes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time as TimeMsg
from geometry_msgs.msg import Point, Quaternion, TransformStamped
from std_msgs.msg import Header

from ..depth.geometry import RegionGeometry, quaternion
from .images import mask_to_image

DEFAULT_TF_PREFIX = "affordance_"


def mask_confidence(mask: np.ndarray, probability: np.ndarray | None) -> float:
    """Mean probability over the mask's pixels; 0 for an empty mask or when there is no probability (silence)."""
    if probability is None or not mask.any():
        return 0.0
    return float(np.mean(probability[mask], dtype=np.float64))


def _point(values: np.ndarray) -> Point:
    return Point(x=float(values[0]), y=float(values[1]), z=float(values[2]))


@dataclass(frozen=True)
class Heard:
    """What a grounding answers: the sound event (its id, 0 for none, and onset) and the span of audio the masks
    were grounded on (the times of its first and last sample), on the node's clock in nanoseconds; 0 for none."""
    event_id: int = 0
    onset_ns: int = 0
    start_ns: int = 0
    end_ns: int = 0


def _time(nanoseconds: int) -> TimeMsg:
    return TimeMsg(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def grounding_message(header: Header, function_mask: np.ndarray, dependency_mask: np.ndarray,
                      function_prob: np.ndarray | None, dependency_prob: np.ndarray | None,
                      sound_event_active: bool, audio_level_db: float, heard: Heard = Heard(),
                      regions: dict[str, RegionGeometry | None] | None = None, depth_frame_id: str = ""):
    """The whole result of one frame. `header` is the camera image's; `regions` are the 3D targets by region
    (avag_ros.depth.targets) in `depth_frame_id`, None without depth. A region without geometry leaves its values
    zero with the valid flag false; a function region whose points fit no plane has a valid point and no pose."""
    from avag_interfaces.msg import AffordanceGrounding

    message = AffordanceGrounding(header=header, function_mask=mask_to_image(function_mask, header),
                                  dependency_mask=mask_to_image(dependency_mask, header),
                                  function_confidence=mask_confidence(function_mask, function_prob),
                                  dependency_confidence=mask_confidence(dependency_mask, dependency_prob),
                                  sound_event_active=bool(sound_event_active), audio_level_db=float(audio_level_db),
                                  event_id=heard.event_id, event_onset=_time(heard.onset_ns),
                                  audio_start=_time(heard.start_ns), audio_end=_time(heard.end_ns),
                                  depth_frame_id=depth_frame_id if regions is not None else "")
    message.function_pose.orientation.w = 0.0  # no pose: all zero, not the identity
    regions = regions or {}
    function, dependency = regions.get("function"), regions.get("dependency")
    if function is not None:
        message.function_point_valid = True
        message.function_point = _point(function.point)
        message.function_pose.position = _point(function.point)
        if function.rotation is not None:
            x, y, z, w = quaternion(function.rotation)
            message.function_pose_valid = True
            message.function_pose.orientation = Quaternion(x=x, y=y, z=z, w=w)
    if dependency is not None:
        message.dependency_point_valid = True
        message.dependency_point = _point(dependency.point)
    return message


def transforms(regions: dict[str, RegionGeometry | None], header: Header, prefix: str = DEFAULT_TF_PREFIX):
    """tf2_msgs/TFMessage: `<prefix>function` at the function pose, `<prefix>dependency` at the dependency point
    with the identity rotation, both children of header.frame_id (the depth image's optical frame) at header's
    stamp. A region without geometry (or a function region without a pose) gets no frame; None when none has."""
    from tf2_msgs.msg import TFMessage

    frames = []
    function, dependency = regions.get("function"), regions.get("dependency")
    if function is not None and function.rotation is not None:
        x, y, z, w = quaternion(function.rotation)
        frames.append(_transform(header, prefix + "function", function.point, Quaternion(x=x, y=y, z=z, w=w)))
    if dependency is not None:
        frames.append(_transform(header, prefix + "dependency", dependency.point, Quaternion(w=1.0)))
    return TFMessage(transforms=frames) if frames else None


def _transform(header: Header, child: str, point: np.ndarray, rotation: Quaternion) -> TransformStamped:
    transform = TransformStamped(header=Header(stamp=header.stamp, frame_id=header.frame_id), child_frame_id=child)
    translation = transform.transform.translation
    translation.x, translation.y, translation.z = (float(v) for v in point)
    transform.transform.rotation = rotation
    return transform
