"""Depth input: the aligned depth images and CameraInfo the node subscribes to, and which of them each colour frame
is paired with.

Each colour frame takes the depth image nearest to it in stamp, within `depth.max_offset_s`: what message_filters'
ApproximateTime policy would pair for one frame (it has no wheel here). The choice is made while the frame waits
and is inferred, not after: the inference loop pins the best depth image so far when a frame enters the node, and
the pin moves to any nearer one that arrives until the frame's 3D is done. So a slow model loses no depth to the
ring, which holds the last DEPTH_BUFFER images only for frames that arrive after their depth.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import replace

from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ..runtime.qos import sensor_qos
from .geometry import Intrinsics

# Depth images kept for a colour frame still to come: its depth usually arrives first, by a few milliseconds.
# Half a second at 60 Hz; the frames waiting for the model keep theirs in pins, not here (memory stays bounded:
# a 640x480 16UC1 image is 600 KiB).
DEPTH_BUFFER = 30


class DepthUnavailable(ValueError):
    """A colour frame gets no 3D; `kind` is the counter it goes to."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class DepthPin:
    """The depth image nearest in stamp to one pending colour frame, among those its buffer has seen so far."""

    __slots__ = ("stamp_ns", "offset_ns", "image", "_buffer")

    def __init__(self, stamp_ns: int, buffer: DepthBuffer) -> None:
        self.stamp_ns = stamp_ns
        self.offset_ns: int | None = None
        self.image: Image | None = None
        self._buffer = buffer

    def offer(self, stamp_ns: int, image: Image) -> None:
        offset_ns = abs(stamp_ns - self.stamp_ns)
        if self.offset_ns is None or offset_ns < self.offset_ns:
            self.offset_ns, self.image = offset_ns, image

    def pair(self, max_offset_s: float) -> tuple[Image, CameraInfo]:
        """The frame's depth image and the latest CameraInfo, or DepthUnavailable saying why not."""
        return self._buffer.pair(self, max_offset_s)

    def release(self) -> None:
        """The frame is done with: the pin follows new depth images no more. Releasing twice is harmless."""
        self._buffer.release(self)


class DepthBuffer:
    """The last depth images, the pins of the colour frames the node holds, and the latest CameraInfo; filled by
    subscription callbacks, read by the inference thread."""

    def __init__(self, capacity: int = DEPTH_BUFFER) -> None:
        self._images: deque[tuple[int, Image]] = deque(maxlen=capacity)
        self._pins: list[DepthPin] = []  # one per colour frame waiting or being inferred: two at most in the node
        self._info: CameraInfo | None = None
        self._lock = threading.Lock()

    def add_image(self, msg: Image) -> None:
        stamp_ns = Time.from_msg(msg.header.stamp).nanoseconds
        with self._lock:
            self._images.append((stamp_ns, msg))
            for pin in self._pins:
                pin.offer(stamp_ns, msg)

    def set_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self._info = msg

    def pin(self, stamp_ns: int) -> DepthPin:
        """Start pairing the colour frame of `stamp_ns`; the caller releases the pin when done with the frame."""
        pin = DepthPin(stamp_ns, self)
        with self._lock:
            for image_stamp_ns, image in self._images:
                pin.offer(image_stamp_ns, image)
            self._pins.append(pin)
        return pin

    def release(self, pin: DepthPin) -> None:
        with self._lock:
            if pin in self._pins:
                self._pins.remove(pin)

    def pair(self, pin: DepthPin, max_offset_s: float) -> tuple[Image, CameraInfo]:
        with self._lock:
            image, offset_ns, info = pin.image, pin.offset_ns, self._info
        if info is None:
            raise DepthUnavailable("frames_without_camera_info", "no CameraInfo received on depth/camera_info yet")
        if image is None:
            raise DepthUnavailable("frames_without_depth", "no depth image received on depth/image yet")
        if offset_ns > max_offset_s * 1e9:
            raise DepthUnavailable("frames_without_depth",
                                   f"the nearest depth image is {offset_ns / 1e9:.3f} s from the colour frame "
                                   f"(depth.max_offset_s is {max_offset_s:g} s)")
        return image, info


def depth_grid_intrinsics(info: Intrinsics, depth_shape: tuple[int, int],
                          colour_shape: tuple[int, int]) -> Intrinsics:
    """The intrinsics of the depth image's grid. A CameraInfo describes the image it comes with: its size must be
    the depth image's (or unset, 0x0, for a depth image of the colour image's size). A depth image of another
    size than the colour image must cover the same field of view: the same aspect ratio, within one pixel."""
    (depth_h, depth_w), (colour_h, colour_w) = depth_shape, colour_shape
    if (info.width, info.height) == (0, 0) and depth_shape == colour_shape:
        return replace(info, width=depth_w, height=depth_h)
    if (info.width, info.height) != (depth_w, depth_h):
        raise DepthUnavailable("depth_rejected", f"the depth image is {depth_w}x{depth_h} but its CameraInfo "
                                            f"describes {info.width}x{info.height}: depth/camera_info must be the "
                                            "depth image's own")
    if depth_shape != colour_shape and abs(colour_h * depth_w / colour_w - depth_h) > 1:
        raise DepthUnavailable("depth_rejected", f"the depth image is {depth_w}x{depth_h}, the colour image "
                                            f"{colour_w}x{colour_h}: another aspect ratio, so not the same field "
                                            "of view, and the mask cannot be placed on the depth image")
    return info


class DepthInput:
    """depth/image and depth/camera_info, subscribed from configure to cleanup, into a DepthBuffer. The inference
    loop pins each colour frame it takes, and releases the pin when done with the frame."""

    def __init__(self, node, qos_overrides) -> None:
        self._node = node
        self.buffer = DepthBuffer()
        self._subscriptions = [
            node.create_subscription(Image, "depth/image", self.buffer.add_image, sensor_qos(),
                                     qos_overriding_options=qos_overrides),
            node.create_subscription(CameraInfo, "depth/camera_info", self.buffer.set_info, sensor_qos(),
                                     qos_overriding_options=qos_overrides),
        ]

    def pin(self, header: Header) -> DepthPin:
        """Start pairing the colour frame of `header`, from its arrival on: after inference a fast depth stream
        has moved on."""
        return self.buffer.pin(Time.from_msg(header.stamp).nanoseconds)

    def destroy(self) -> None:
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        self._subscriptions = []
