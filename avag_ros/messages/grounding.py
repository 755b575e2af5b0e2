"""One frame's whole result as a single avag_interfaces/AffordanceGrounding.

Its masks are built by the same function as the single topics' and its 3D values by the same as the 3D topics', so
the combined message and the single topics carry the same bytes. Nothing here publishes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time as TimeMsg
from std_msgs.msg import Header

from ..depth.geometry import RegionGeometry
from .images import mask_to_image
from .targets import orientation, point


def mask_confidence(mask: np.ndarray, probability: np.ndarray | None) -> float:
    """Mean probability over the mask's pixels; 0 for an empty mask or when there is no probability (silence)."""
    if probability is None or not mask.any():
        return 0.0
    return float(np.mean(probability[mask], dtype=np.float64))


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
    (avag_ros.depth.targets) in `depth_frame_id`, None when the frame got no 3D. A value whose valid flag is false
    is all zero, as AffordanceGrounding.msg defines: a function region whose points fit no plane has a valid point
    and a pose of zeros, not one at the point with no orientation."""
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
        message.function_point = point(function.point)
        if function.quaternion is not None:
            message.function_pose_valid = True
            message.function_pose.position = point(function.point)
            message.function_pose.orientation = orientation(function.quaternion)
    if dependency is not None:
        message.dependency_point_valid = True
        message.dependency_point = point(dependency.point)
    return message
