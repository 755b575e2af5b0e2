"""The demo scene in 3D: a camera looking down at a table, the objects standing on it, and what their regions'
3D points and normals truly are. Numpy only.

Each object is a slab whose top (where the picture shows the object) lies at its own height above the table,
parallel to it, except TILTED_OBJECT's, which is tilted. Depth carries Gaussian noise of DEPTH_NOISE_M (a
structured-light or stereo camera at 0.7 m) and misses a band along each object's outline, as such sensors do
at depth edges.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from avag_core.data.synthetic import Scene

from ..depth.geometry import DepthImage, Intrinsics, erode, region_points, robust_point

TABLE_DISTANCE_M = 0.70  # from the camera's centre to the table plane
TABLE_TILT_DEG = 40.0  # between the optical axis and the table's normal: a camera looking down and ahead
OBJECT_HEIGHTS_M = (0.06, 0.03, 0.09)
TILTED_OBJECT = 1  # the second object's top is tilted
TILT_DEG = 25.0
EDGE_HOLES_PX = 2
DEPTH_NOISE_M = 0.002
NOISE_SEED = 0
FOCAL_FRACTION = 1.1  # focal length in image widths: a field of view of about 49 degrees


@dataclass(frozen=True)
class Plane:
    """{X : normal . X = -distance}, normal unit and pointing toward the camera."""
    normal: np.ndarray
    distance: float

    def depth(self, rays: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return -self.distance / (rays @ self.normal)


def rotation_x(degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    return np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])


def rotation_y(degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


@dataclass(frozen=True)
class DepthScene:
    intrinsics: Intrinsics
    depth_m: np.ndarray  # HxW float32, NaN where nothing was measured
    planes: list[Plane]  # the top of each object, in the scene's object order


def camera_for(size: int) -> Intrinsics:
    focal = FOCAL_FRACTION * size
    return Intrinsics(focal, focal, (size - 1) / 2, (size - 1) / 2, size, size)


def _rays(intrinsics: Intrinsics) -> np.ndarray:
    u, v = np.meshgrid(np.arange(intrinsics.width), np.arange(intrinsics.height))
    return np.stack([(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy,
                     np.ones(u.shape)], axis=-1)


def render_depth(scene: Scene) -> DepthScene:
    size = scene.image.shape[0]
    intrinsics = camera_for(size)
    rays = _rays(intrinsics)
    table_normal = rotation_x(-TABLE_TILT_DEG) @ np.array([0.0, 0.0, -1.0])
    table = Plane(table_normal, TABLE_DISTANCE_M)
    depth = table.depth(rays)
    planes = []
    for index, mask in enumerate(scene.object_masks):
        height = OBJECT_HEIGHTS_M[index % len(OBJECT_HEIGHTS_M)]
        normal = table_normal
        if index == TILTED_OBJECT:
            normal = rotation_y(TILT_DEG) @ table_normal
        # The top passes through the point `height` above the table under the object's centre.
        v, u = np.nonzero(mask)
        centre_ray = rays[int(np.median(v)), int(np.median(u))]
        on_table = centre_ray * table.depth(centre_ray[None])[0]
        anchor = on_table + height * table_normal
        plane = Plane(normal, float(-normal @ anchor))
        planes.append(plane)
        depth = np.where(mask, plane.depth(rays), depth)
    outline = np.zeros(depth.shape, bool)
    for mask in scene.object_masks:
        outline |= mask & ~erode(mask, EDGE_HOLES_PX)
        outline |= ~mask & ~erode(~mask, EDGE_HOLES_PX)
    depth = depth + np.random.default_rng(NOISE_SEED).normal(0.0, DEPTH_NOISE_M, depth.shape)
    return DepthScene(intrinsics, np.where(outline, np.nan, depth).astype(np.float32), planes)


def true_target(depth_scene: DepthScene, function_mask: np.ndarray, object_index: int, *, erode_px: int,
                min_m: float, max_m: float) -> tuple[np.ndarray, np.ndarray]:
    """(point, surface normal) that a perfect mask would give: the point definition of docs/3d-targets.md applied to the true
    function region, and the true normal of the object's top."""
    points = region_points(function_mask, DepthImage(depth_scene.depth_m, 1.0), depth_scene.intrinsics, erode_px,
                           min_m, max_m)
    return robust_point(points), depth_scene.planes[object_index].normal


def project(point: np.ndarray, intrinsics: Intrinsics) -> tuple[int, int]:
    return (int(round(intrinsics.fx * point[0] / point[2] + intrinsics.cx)),
            int(round(intrinsics.fy * point[1] / point[2] + intrinsics.cy)))
