"""Aligned depth images and CameraInfo <-> the depth side's numpy values (avag_ros.depth.geometry's DepthImage and
Intrinsics); ValueError names what is wrong with a message."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ..depth.geometry import DepthImage, Intrinsics
from .images import array_image

# Depth encodings RGB-D drivers publish for aligned depth: (numpy dtype, metres per unit). mono16 is 16UC1 under
# another name (some drivers use it).
DEPTH_ENCODINGS = {"16UC1": ("u2", 0.001), "mono16": ("u2", 0.001), "32FC1": ("f4", 1.0)}


def depth_image(msg: Image) -> DepthImage:
    """sensor_msgs/Image depth (16UC1 millimetres or 32FC1 metres) -> its values as they are (no copy unless the
    byte order differs) and their unit; 0 and NaN stay as they are (no measurement), for the geometry to ignore."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"unsupported depth encoding '{msg.encoding}'; supported: {', '.join(DEPTH_ENCODINGS)}")
    kind, scale = DEPTH_ENCODINGS[msg.encoding]
    height, width, step = msg.height, msg.width, msg.step
    if height == 0 or width == 0:
        raise ValueError(f"depth image has zero size ({width}x{height})")
    row_bytes = width * np.dtype(kind).itemsize
    if step < row_bytes or len(msg.data) != step * height:
        raise ValueError(f"depth image {width}x{height} {msg.encoding}: step {step} and {len(msg.data)} bytes of "
                         f"data do not fit (need step >= {row_bytes} and step x height bytes)")
    dtype = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    rows = np.frombuffer(msg.data, np.uint8).reshape(height, step)[:, :row_bytes]
    values = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
    return DepthImage(values if dtype.isnative else values.astype(dtype.newbyteorder("=")), scale)


def metres_to_depth_image(depth_m: np.ndarray, encoding: str, header: Header) -> Image:
    """HxW metres -> 16UC1 millimetres (NaN and beyond 65.535 m become 0, no measurement) or 32FC1 metres."""
    if encoding == "16UC1":
        millimetres = np.round(np.nan_to_num(depth_m, nan=0.0, posinf=0.0, neginf=0.0) * 1000)
        return array_image(np.where((millimetres > 0) & (millimetres < 65536), millimetres, 0).astype(np.uint16),
                           "16UC1", header)
    if encoding == "32FC1":
        return array_image(np.ascontiguousarray(depth_m, dtype=np.float32), "32FC1", header)
    raise ValueError(f"cannot publish depth as {encoding!r}; use 16UC1 or 32FC1")


def intrinsics_to_camera_info(intrinsics: Intrinsics, header: Header) -> CameraInfo:
    """A rectified pinhole CameraInfo (no distortion, P = [K | 0])."""
    info = CameraInfo(header=header, width=intrinsics.width, height=intrinsics.height, distortion_model="plumb_bob")
    info.d = [0.0] * 5
    info.k = [intrinsics.fx, 0.0, intrinsics.cx, 0.0, intrinsics.fy, intrinsics.cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [intrinsics.fx, 0.0, intrinsics.cx, 0.0, 0.0, intrinsics.fy, intrinsics.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def camera_info_intrinsics(msg: CameraInfo) -> Intrinsics:
    """K, size and distortion of the image a CameraInfo comes with (width and height 0 when the driver left them
    unset)."""
    fx, _, cx, _, fy, cy = (float(v) for v in msg.k[:6])
    if fx <= 0 or fy <= 0:
        raise ValueError(f"CameraInfo on frame '{msg.header.frame_id}' has no intrinsics (K = {list(msg.k)})")
    return Intrinsics(fx, fy, cx, cy, int(msg.width), int(msg.height), msg.distortion_model,
                      tuple(float(c) for c in msg.d))
