"""The QoS profiles of the node's topics.

Functions, not constants: rclpy writes QoS overrides into the profile it is given, so a shared profile would carry
one node's overrides into every node created after it in the same process.
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data


def output_qos() -> QoSProfile:
    return QoSProfile(depth=5)


def camera_qos() -> QoSProfile:
    """Only the newest image matters: best effort, depth 1 (overridable with the standard QoS overrides)."""
    return QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)


def sensor_qos() -> QoSProfile:
    """rclpy's sensor-data profile (best effort, depth 5), as a fresh copy."""
    return QoSProfile(history=qos_profile_sensor_data.history, depth=5,
                      reliability=qos_profile_sensor_data.reliability,
                      durability=qos_profile_sensor_data.durability)


def tf_qos() -> QoSProfile:
    """What tf2's TransformBroadcaster offers on /tf, so that every tf2 listener matches: reliable, volatile,
    depth 100."""
    return QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
