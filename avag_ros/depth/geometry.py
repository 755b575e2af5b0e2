"""Where to act, in 3D: an affordance mask back-projected through an aligned depth image, a robust point, and an
approach pose from a robust plane fit. numpy and OpenCV (erosion, undistortion) only, no ROS.

Conventions: the camera's optical frame (x right, y down, z forward, as REP 103 `*_optical_frame`), metres, and
pixel (u, v) = (column, row) with the CameraInfo's K mapping a point to pixel centres at integer coordinates.

The point of a region, exactly (docs/3d-targets.md): erode the mask by `erode_px` (keep the pixels whose every
pixel within a Euclidean distance of `erode_px` is in the mask; outside the image counts as outside; if nothing is
left, the mask itself), keep the pixels whose depth is finite and within [min_m, max_m], back-project each (from
where an ideal pinhole camera would see it, when the CameraInfo has lens distortion), and take the per-axis median.
The erosion keeps edge pixels, whose depth often belongs to the background, out of it.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

# Plane fit: adaptive RANSAC on an even subsample, then least squares on every inlier (`fit_plane`).
RANSAC_POINTS = 1024
RANSAC_BATCH = 64  # hypotheses scored in one matrix product; a clean region needs just one batch
RANSAC_MAX_HYPOTHESES = 2048  # what 15% inliers need; bounds the cost of a region of noise
RANSAC_CONFIDENCE = 0.999  # wanted chance that at least one hypothesis is three inliers
# The inliers are taken again from the least-squares plane this many times, and it is fitted again: a hypothesis
# from three noisy points is tilted, and its slab cuts off part of the plane and takes in outliers on one side.
PLANE_REFITS = 2
X_SIGN_BAND_DEGREES = 10.0  # see x_sign_by_rule
POSE_POINTS = 2048  # the plane and main direction of a region are fitted on this many of its points, evenly spread
MIN_INLIER_M = 0.004  # inlier distance: this, or 1% of the median depth if larger (depth noise grows with range)


# CameraInfo's distortion models (sensor_msgs/distortion_models.hpp) that region_points undoes: OpenCV's pinhole
# model takes plumb_bob's 5 and rational_polynomial's 8 coefficients, its fisheye model equidistant's 4.
PINHOLE_DISTORTION_MODELS = ("plumb_bob", "rational_polynomial")
PINHOLE_COEFFICIENT_COUNTS = (4, 5, 8, 12, 14)
FISHEYE_DISTORTION_MODEL = "equidistant"
# Until the pixel reprojects within 0.01 px: OpenCV's default, 5 iterations, leaves up to a quarter of a pixel in the
# corners of a strongly distorted lens. The fisheye model's default already converges.
PINHOLE_UNDISTORTION_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 0.01)


@dataclass(frozen=True)
class Intrinsics:
    """Intrinsics of an image of `width` x `height` pixels: CameraInfo's K, and its distortion (`distortion_model`,
    `d`), which is all zero or empty for the rectified, aligned depth images of most RGB-D cameras."""
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion_model: str = ""
    distortion: tuple[float, ...] = ()

    @property
    def camera_matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


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
    """[N, 3] float32 points of a region (the definition above; N is 0 for an empty mask or one without valid
    depth); `mask` and `depth` share one grid, which `intrinsics` describes. With lens distortion, each pixel is
    back-projected from where an ideal pinhole camera would have seen it. ValueError: a distortion model that
    cannot be undone."""
    undistort = pixel_undistortion(intrinsics)
    # On the mask's bounding box: most regions are a small part of the image, and beyond the box the mask is
    # empty, as the erosion takes the outside of the image to be.
    left, top, width, height = cv2.boundingRect(mask.astype(np.uint8))
    if width == 0:  # an empty mask: no box to erode (OpenCV refuses an empty image)
        return np.zeros((0, 3), np.float32)
    crop = mask[top:top + height, left:left + width]
    core = erode(crop, erode_px)
    if not core.any():
        core = crop
    rows, columns = np.nonzero(core)
    rows, columns = rows + top, columns + left
    z = depth.values[rows, columns].astype(np.float32) * np.float32(depth.metres_per_unit)
    valid = np.isfinite(z) & (z >= min_m) & (z <= max_m)
    u, v, z = columns[valid].astype(np.float32), rows[valid].astype(np.float32), z[valid]
    if undistort is not None and len(z):
        u, v = undistort(u, v)
    x = (u - np.float32(intrinsics.cx)) * z / np.float32(intrinsics.fx)
    y = (v - np.float32(intrinsics.cy)) * z / np.float32(intrinsics.fy)
    return np.stack([x, y, z], axis=1)


PixelMap = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def pixel_undistortion(intrinsics: Intrinsics) -> PixelMap | None:
    """A function (u, v) -> (u, v) from distorted pixel coordinates to those an ideal pinhole camera with the same
    K would see, or None when the distortion is all zero; ValueError for a model OpenCV's undistortPoints does not
    cover."""
    if not any(intrinsics.distortion):
        return None
    model, k = intrinsics.distortion_model, intrinsics.camera_matrix
    coefficients = np.asarray(intrinsics.distortion, np.float64)
    if model in PINHOLE_DISTORTION_MODELS and len(coefficients) in PINHOLE_COEFFICIENT_COUNTS:
        def undistort_points(pixels):
            return cv2.undistortPoints(pixels, k, coefficients, None, None, k, PINHOLE_UNDISTORTION_CRITERIA)
    elif model == FISHEYE_DISTORTION_MODEL and len(coefficients) == 4:
        def undistort_points(pixels):
            return cv2.fisheye.undistortPoints(pixels, k, coefficients, P=k)
    else:
        raise ValueError(f"cannot undo lens distortion '{model}' with {len(coefficients)} coefficients (not all "
                         f"zero): supported are {' and '.join(PINHOLE_DISTORTION_MODELS)} (4, 5, 8, 12 or 14 "
                         f"coefficients) and {FISHEYE_DISTORTION_MODEL} (4)")

    def undistort(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pixels = np.stack([u, v], axis=1).astype(np.float64)[:, None, :]
        ideal = undistort_points(pixels)[:, 0].astype(np.float32)
        return ideal[:, 0], ideal[:, 1]
    return undistort


def robust_point(points: np.ndarray) -> np.ndarray:
    return np.median(points, axis=0).astype(np.float64)


def principal_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(variances ascending, unit axes as columns) of a point set, from its 3x3 covariance."""
    centred = points - points.mean(axis=0)
    return np.linalg.eigh(centred.T @ centred / len(points))


def fit_plane(points: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(unit normal, inlier flags over `points`) of the dominant plane, or None when the points span no plane.
    Adaptive RANSAC on an even subsample: hypotheses are drawn in batches until, given the largest inlier share
    found so far, one of them is all inliers with RANSAC_CONFIDENCE (bounded), then `least_squares_plane` on every
    inlier of the best (PLANE_REFITS).
    Deterministic: the subsample and the hypotheses are fixed for given points."""
    if len(points) < 3:
        return None
    sample = even_subsample(points, RANSAC_POINTS)
    threshold = max(MIN_INLIER_M, 0.01 * float(np.median(sample[:, 2])))
    rng = np.random.default_rng(0)
    best_votes, best_normal, best_offset = 0, None, 0.0
    drawn, needed = 0, RANSAC_MAX_HYPOTHESES
    while drawn < needed:
        triples = sample[rng.integers(0, len(sample), (RANSAC_BATCH, 3))]  # [hypotheses, 3 points, xyz]
        drawn += RANSAC_BATCH
        normals = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])
        lengths = np.linalg.norm(normals, axis=1)
        usable = lengths > 1e-12
        if not usable.any():
            continue
        normals = normals[usable] / lengths[usable, None]
        offsets = np.einsum("hc,hc->h", normals, triples[usable, 0])
        votes = (np.abs(sample @ normals.T - offsets) < threshold).sum(axis=0)
        best = np.argmax(votes)
        if votes[best] > best_votes:
            best_votes, best_normal, best_offset = int(votes[best]), normals[best], offsets[best]
            needed = hypotheses_needed(best_votes / len(sample))
    if best_normal is None:
        return None
    inliers = np.abs(points @ best_normal - best_offset) < threshold
    for _ in range(PLANE_REFITS + 1):
        plane = least_squares_plane(points[inliers])
        if plane is None:
            return None
        normal, offset = plane
        inliers = np.abs(points @ normal - offset) < threshold
    return normal, inliers


def least_squares_plane(points: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(unit normal, offset) of the plane {X : normal . X = offset} through `points` that minimises their residuals
    along the camera's rays, as depth noise lies; None when they span no plane. Solved as X . a = 1 (a = normal /
    offset): each point's residual there is its relative error in depth, so noise in depth biases a only in scale,
    where orthogonal regression (the smallest principal axis) would tilt the normal of a narrow, tilted region."""
    gram = points.T @ points  # the normal equations: 3x3, so far cheaper than an SVD of the points
    eigenvalues = np.linalg.eigvalsh(gram)
    if len(points) < 3 or eigenvalues[0] <= 1e-12 * eigenvalues[2]:  # collinear, or a plane seen edge on
        return None
    a = np.linalg.solve(gram, points.sum(axis=0))
    length = float(np.linalg.norm(a))
    return a / length, 1.0 / length


def hypotheses_needed(inlier_share: float) -> int:
    """RANSAC hypotheses for one of them to be three inliers with RANSAC_CONFIDENCE: log(1 - p) / log(1 - w^3),
    within one batch and RANSAC_MAX_HYPOTHESES."""
    all_inliers = inlier_share ** 3
    if all_inliers >= 1.0:
        return RANSAC_BATCH
    needed = math.log(1.0 - RANSAC_CONFIDENCE) / math.log1p(-all_inliers)
    return int(min(max(needed, RANSAC_BATCH), RANSAC_MAX_HYPOTHESES))


def approach_frame(points: np.ndarray, point: np.ndarray, previous_x: np.ndarray | None = None) -> np.ndarray | None:
    """3x3 rotation whose columns are the pose's axes in the camera frame: z the plane's normal pointing out of the
    surface toward the camera (a gripper approaches along -z), x the region's main direction in the plane, y =
    z cross x. None when the region fits no plane. Fitted on at most POSE_POINTS of the region's points, evenly
    spread. The sign of x: the one within 90 degrees of `previous_x` (the x axis last published for this region)
    when given, so that a still scene keeps its pose; otherwise `x_sign_by_rule`."""
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
    agrees = main @ previous_x >= 0 if previous_x is not None else x_sign_by_rule(main) > 0
    if not agrees:
        main = -main
    return np.stack([main, np.cross(normal, main), normal], axis=1)


def x_sign_by_rule(main: np.ndarray) -> float:
    """+1 or -1: the sign that makes `main` point right in the image (+x), or, when it is within
    X_SIGN_BAND_DEGREES of the image's vertical (|x| < sin of that), down (+y), or, when it is that close to the
    optical axis too, away from the camera (+z). The bands keep a vertical region from flipping on noise: the
    boundary between right and down sits where a region is X_SIGN_BAND_DEGREES off vertical, not at vertical."""
    band = math.sin(math.radians(X_SIGN_BAND_DEGREES))
    if abs(main[0]) >= band:
        return math.copysign(1.0, main[0])
    if abs(main[1]) >= band:
        return math.copysign(1.0, main[1])
    return math.copysign(1.0, main[2])


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
    """A region in 3D, with what its messages carry: the point, the cloud to publish and the pose's quaternion."""
    point: np.ndarray  # [3]
    points: np.ndarray  # [N, 3], every valid point of the region
    rotation: np.ndarray | None  # [3, 3], columns x, y, z; None when no plane fits
    cloud: np.ndarray  # [M, 3], the points evenly subsampled to what a published cloud holds
    quaternion: tuple[float, float, float, float] | None = field(init=False)  # (x, y, z, w) of rotation

    def __post_init__(self) -> None:
        object.__setattr__(self, "quaternion", None if self.rotation is None else quaternion(self.rotation))


def mask_on_depth_grid(mask: np.ndarray, depth_shape: tuple[int, int]) -> np.ndarray:
    """A colour-image mask resampled onto an aligned depth image of another size: each depth pixel takes the mask
    pixel under its centre."""
    if mask.shape == depth_shape:
        return mask
    return cv2.resize(mask.astype(np.uint8), (depth_shape[1], depth_shape[0]),
                      interpolation=cv2.INTER_NEAREST_EXACT).astype(bool)


def region_geometry(mask: np.ndarray, depth: DepthImage, intrinsics: Intrinsics, *, erode_px: int, min_m: float,
                    max_m: float, min_points: int, with_pose: bool, previous_x: np.ndarray | None = None,
                    max_cloud_points: int | None = None) -> RegionGeometry | None:
    """The region's point (and pose), or None when fewer than `min_points` of its pixels have valid depth (an empty
    mask included). `previous_x`: the x axis of the pose last published for this region (`approach_frame`);
    `max_cloud_points`: the most points its cloud keeps (None: all)."""
    points = region_points(mask_on_depth_grid(mask, depth.shape), depth, intrinsics, erode_px, min_m, max_m)
    if len(points) < max(min_points, 1):
        return None
    point = robust_point(points)
    cloud = points if max_cloud_points is None else even_subsample(points, max_cloud_points)
    return RegionGeometry(point, points, approach_frame(points, point, previous_x) if with_pose else None, cloud)
