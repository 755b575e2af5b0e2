"""The executor the node runs on."""
from __future__ import annotations

from rclpy.executors import Executor, SingleThreadedExecutor

try:  # rclpy has an events executor from Jazzy (7.1.4) on
    from rclpy.experimental import EventsExecutor
except ImportError:  # Humble
    EventsExecutor = None


def create_executor(context=None) -> Executor:
    """rclpy's events executor dispatches from C++ instead of rebuilding a wait set in Python on every wake-up:
    about 1 ms less overhead per frame than SingleThreadedExecutor (bench/node_latency.py), which is a fifth of the
    node's budget. Humble falls back to the latter."""
    if EventsExecutor is None:
        return SingleThreadedExecutor(context=context)
    return EventsExecutor(context=context)
