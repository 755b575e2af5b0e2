"""Real rclpy + Fast DDS on loopback, one ROS domain per test so that tests never hear each other."""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
import rclpy
import soundfile
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from avag_core import build_model
from avag_core.checkpoints.weights import save_checkpoint
from avag_ros.messages.images import rgb_to_image
from avag_ros.runtime.executors import create_executor
from avag_ros.grounding_node import GroundingNode

_domains = itertools.count((os.getpid() % 50) * 2 + 1)


def fresh_domain_id() -> int:
    return next(_domains) % 101 + 1  # ids above 101 may hit ephemeral ports


@contextmanager
def ros_domain():
    """A fresh rclpy context on its own domain id, with an executor spinning in the background."""
    context = Context()
    rclpy.init(context=context, domain_id=fresh_domain_id())
    executor = create_executor(context=context)  # the node's own, as in production
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    thread = threading.Thread(target=spin, daemon=True)
    nodes: list[Node] = []

    def add(node: Node) -> Node:
        nodes.append(node)
        executor.add_node(node)
        return node

    thread.start()
    try:
        yield context, add
    finally:
        for node in nodes:
            if isinstance(node, GroundingNode) and node._worker is not None:
                node.trigger_deactivate()
        stop.set()
        thread.join(timeout=5.0)
        executor.shutdown(timeout_sec=5.0)
        for node in nodes:
            node.destroy_node()
        rclpy.shutdown(context=context)


def write_tone(path, seconds=3.0, rate=16000, amplitude=0.3):
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(path, (amplitude * np.sin(2 * np.pi * 660 * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


def small_checkpoint(path, image_size=64):
    """A random b0 at 64x64: fast enough for CPU tests (the node loads it like any trained checkpoint). The light
    audio encoder keeps the file at ~41 MB where VGGish alone is 288 MB; no node test is about VGGish."""
    save_checkpoint(path, build_model("avagformer_b0", image_size=image_size, audio_encoder="log_mel_cnn",
                                      freeze_audio_encoder=False))
    return path


def grounding_node(context, checkpoint, audio_file, **overrides) -> GroundingNode:
    values = {"checkpoint": str(checkpoint), "audio.source": "file", "audio.file": str(audio_file),
              "max_rate_hz": 0.0, **overrides}
    return GroundingNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])


def grounding_node_command(checkpoint, audio_file, *ros_arguments: str) -> list[str]:
    """The node as its own process, the way `ros2 run` starts it, with the file audio source."""
    return [sys.executable, "-m", "avag_ros.grounding_node", "--ros-args", "-p", f"checkpoint:={checkpoint}",
            "-p", "audio.source:=file", "-p", f"audio.file:={audio_file}", *ros_arguments]


def interrupt(node: subprocess.Popen) -> str:
    """Ctrl-C to a node process started with stderr piped; its log. A node that is not gone within 20 s is killed
    and fails the test: never leave one spinning after it."""
    node.send_signal(signal.SIGINT)
    try:
        return node.communicate(timeout=20)[1]
    except subprocess.TimeoutExpired:
        node.kill()
        raise


class Probe(Node):
    """Publishes camera images and records what comes back."""

    def __init__(self, context, topics: dict[str, type], image_topic="image", image_type=Image):
        super().__init__("probe", context=context)
        self.received: dict[str, list] = {topic: [] for topic in topics}
        self._lock = threading.Lock()
        for topic, kind in topics.items():
            self.create_subscription(kind, topic, lambda msg, t=topic: self._record(t, msg), 50)
        self.publisher = self.create_publisher(image_type, image_topic, qos_profile_sensor_data)

    def _record(self, topic, msg):
        with self._lock:
            self.received[topic].append(msg)

    def count(self, topic) -> int:
        with self._lock:
            return len(self.received[topic])

    def header(self, frame_id="camera", sec=0) -> Header:
        header = Header(frame_id=frame_id)
        header.stamp = self.get_clock().now().to_msg() if not sec else header.stamp
        if sec:
            header.stamp.sec = sec
        return header

    def publish_rgb(self, rgb, encoding="rgb8", frame_id="camera"):
        msg = rgb_to_image(rgb, encoding, self.header(frame_id))
        self.publisher.publish(msg)
        return msg

    def wait_for(self, topic, count=1, timeout=30.0, publish=None, period=0.2) -> bool:
        """Wait until `count` messages arrived on `topic`, calling `publish()` every `period` meanwhile."""
        return self.wait_until(lambda: self.count(topic) >= count, timeout, publish, period)

    def first(self, topic, condition):
        """The first message received on `topic` that meets `condition`, or None."""
        with self._lock:
            return next((msg for msg in self.received[topic] if condition(msg)), None)

    def wait_until(self, done, timeout=30.0, publish=None, period=0.2) -> bool:
        """Wait until `done()` holds, calling `publish()` every `period` meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return True
            if publish is not None:
                publish()
            time.sleep(period)
        return done()
