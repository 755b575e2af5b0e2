"""Where to act, in 3D: an affordance mask back-projected through an aligned depth image, a robust point, and an
approach pose from a robust plane fit. numpy (and OpenCV's erosion) only, no ROS.

Conventions: the camera's optical frame (x right, y down, z forward, as REP 103 `*_optical_frame`), metres, and
pixel (u, v) = (column, row) with the CameraInfo's K mapping a point to pixel centres at integer coordinates.

The point of a region, exactly (README, "3D targets"): erode the mask by `erode_px` (keep the pixels whose every
pixel within a Euclidean distance of `erode_px` is in the mask; outside the image counts as outside; if nothing is
left, the mask itself), keep the pixels whose depth is finite and within [min_m, max_m], back-project each, and
take the per-axis median. The erosion keeps edge pixels, whose depth often belongs to the background, out of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Plane fit: RANSAC on an even subsample, then least squares on every inlier.
RANSAC_POINTS = 1024
RANSAC_ITERATIONS = 64
POSE_POINTS = 2048  # the plane and main direction of a region are fitted on this many of its points, evenly spread
MIN_INLIER_M = 0.004  # inlier distance: this, or 1% of the median depth if larger (depth noise grows with range)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of an image of `width` x `height` pixels: CameraInfo's K, its distortion model and
    coefficients (`d`)."""
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion_model: str = ""
    distortion: tuple = ()


@dataclass(frozen=True)
class DepthImage:
    """A depth image as it arrived (uint16 millimetres or float32 metres, not converted as a whole: only the
    pixels a region reads are), and the metres one unit is."""
    values: np.ndarray
    metres_per_unit: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape


def disk(radius: int) -> np.ndarray:
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius ** 2).astype(np.uint8)


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """The pixels of `mask` whose whole disk of `radius` lies in it (outside the image counts as outside)."""
    if radius <= 0:
        return mask
    return cv2.erode(mask.astype(np.uint8), disk(radius), borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


def region_points(mask: np.ndarray, depth: DepthImage, intrinsics: Intrinsics, erode_px: int, min_m: float,
                  max_m: float) -> np.ndarray:
    """[N, 3] float32 points of a region (the definition above); `mask` and `depth` share one grid, which
    `intrinsics` describes."""
    # On the mask's bounding box: most regions are a small part of the image, and beyond the box the mask is
    # empty, as the erosion takes the outside of the image to be.
    left, top, width, height = cv2.boundingRect(mask.astype(np.uint8))
    crop = mask[top:top + height, left:left + width]
    core = erode(crop, erode_px)
    if not core.any():
        core = crop
    rows, columns = np.nonzero(core)
    rows, columns = rows + top, columns + left
    z = depth.values[rows, columns].astype(np.float32) * np.float32(depth.metres_per_unit)
    valid = np.isfinite(z) & (z >= min_m) & (z <= max_m)
    rows, columns, z = rows[valid], columns[valid], z[valid]
    x = (columns.astype(np.float32) - np.float32(intrinsics.cx)) * z / np.float32(intrinsics.fx)
    y = (rows.astype(np.float32) - np.float32(intrinsics.cy)) * z / np.float32(intrinsics.fy)
    return np.stack([x, y, z], axis=1)


def robust_point(points: np.ndarray) -> np.ndarray:
    return np.median(points, axis=0).astype(np.float64)


def principal_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(variances ascending, unit axes as columns) of a point set, from its 3x3 covariance."""
    centred = points - points.mean(axis=0)
    return np.linalg.eigh(centred.T @ centred / len(points))


def fit_plane(points: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(unit normal, inlier flags over `points`) of the dominant plane, or None when the points span no plane.
    Deterministic: the RANSAC subsample and hypotheses are fixed for given points."""
    if len(points) < 3:
        return None
    sample = even_subsample(points, RANSAC_POINTS)
    threshold = max(MIN_INLIER_M, 0.01 * float(np.median(sample[:, 2])))
    rng = np.random.default_rng(0)
    triples = sample[rng.integers(0, len(sample), (RANSAC_ITERATIONS, 3))]  # [hypotheses, 3 points, xyz]
    normals = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    usable = lengths > 1e-12
    if not usable.any():
        return None
    normals = normals[usable] / lengths[usable, None]
    offsets = np.einsum("hc,hc->h", normals, triples[usable, 0])
    votes = (np.abs(sample @ normals.T - offsets) < threshold).sum(axis=0)
    best = np.argmax(votes)
    inliers = np.abs(points @ normals[best] - offsets[best]) < threshold
    if inliers.sum() < 3:
        return None
    variances, axes = principal_axes(points[inliers])
    if variances[1] < 1e-12:  # collinear
        return None
    return axes[:, 0], inliers


def approach_frame(points: np.ndarray, point: np.ndarray) -> np.ndarray | None:
    """3x3 rotation whose columns are the pose's axes in the camera frame: z the plane's normal pointing out of the
    surface toward the camera (a gripper approaches along -z), x the region's main direction in the plane (the
    sign that points right in the image), y = z cross x. None when the region fits no plane. Fitted on at most
    POSE_POINTS of the region's points, evenly spread."""
    points = even_subsample(points, POSE_POINTS).astype(np.float64)
    fitted = fit_plane(points)
    if fitted is None:
        return None
    normal, inliers = fitted
    if normal @ point > 0:  # toward the camera, which sits at the origin
        normal = -normal
    flat = points[inliers] - np.outer(points[inliers] @ normal, normal)
    main = principal_axes(flat)[1][:, 2]
    main -= (main @ normal) * normal
    main /= np.linalg.norm(main)
    if main[0] < 0 or (abs(main[0]) < 1e-9 and main[1] < 0):
        main = -main
    return np.stack([main, np.cross(normal, main), normal], axis=1)


def quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation matrix."""
    m = rotation
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s)
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = (0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s)
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = ((m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s)
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = ((m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s)
    return tuple(float(c) for c in q)


def rotation_from_quaternion(q: tuple[float, float, float, float]) -> np.ndarray:
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def even_subsample(points: np.ndarray, limit: int) -> np.ndarray:
    """At most `limit` points, taken at an even stride so that the cloud covers the whole region."""
    if len(points) <= limit:
        return points
    return points[np.linspace(0, len(points) - 1, limit).round().astype(int)]


@dataclass(frozen=True)
class RegionGeometry:
    point: np.ndarray  # [3]
    points: np.ndarray  # [N, 3]
    rotation: np.ndarray | None  # [3, 3], columns x, y, z; None when no plane fits


def mask_on_depth_grid(mask: np.ndarray, depth_shape: tuple[int, int]) -> np.ndarray:
    """A colour-image mask resampled onto an aligned depth image of another size: each depth pixel takes the mask
    pixel under its centre."""
    if mask.shape == depth_shape:
        return mask
    return cv2.resize(mask.astype(np.uint8), (depth_shape[1], depth_shape[0]),
                      interpolation=cv2.INTER_NEAREST_EXACT).astype(bool)


def region_geometry(mask: np.ndarray, depth: DepthImage, intrinsics: Intrinsics, *, erode_px: int, min_m: float,
                    max_m: float, min_points: int, with_pose: bool) -> RegionGeometry | None:
    """The region's point (and pose), or None when fewer than `min_points` of its pixels have valid depth."""
    points = region_points(mask_on_depth_grid(mask, depth.shape), depth, intrinsics, erode_px, min_m, max_m)
    if len(points) < max(min_points, 1):
        return None
    point = robust_point(points)
    return RegionGeometry(point, points, approach_frame(points, point) if with_pose else None)
