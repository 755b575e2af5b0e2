"""avag_ros.depth.geometry on its own: erosion, back-projection (with lens distortion), the robust point, the plane
fit and the approach frame, quaternions, subsampling and mask resampling.

Every expected value comes from an independent computation written here (brute-force loops, the generated plane
or points, OpenCV's forward projection), never from the function under test.
"""
import math
from fractions import Fraction

import cv2
import numpy as np
import pytest

from avag_ros.depth.geometry import (DepthImage, Intrinsics, approach_frame, erode, even_subsample, fit_plane,
                                     mask_on_depth_grid, quaternion, region_geometry, region_points, robust_point,
                                     rotation_from_quaternion)

WIDTH, HEIGHT = 640, 480
FX, FY, CX, CY = 600.0, 590.0, 322.4, 236.8
PINHOLE = Intrinsics(FX, FY, CX, CY, WIDTH, HEIGHT)
RULE = {"erode_px": 3, "min_m": 0.1, "max_m": 5.0, "min_points": 50}


def angle_degrees(a: np.ndarray, b: np.ndarray) -> float:
    return math.degrees(math.acos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1.0, 1.0)))


def line_angle_degrees(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two lines (a normal and its opposite are the same plane)."""
    return min(angle_degrees(a, b), angle_degrees(a, -b))


def brute_force_erosion(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixel by pixel: kept when every pixel within `radius` (Euclidean) is inside the image and in the mask."""
    height, width = mask.shape
    out = np.zeros_like(mask)
    for row, column in zip(*np.nonzero(mask)):
        disk = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
                if dx * dx + dy * dy <= radius * radius]
        out[row, column] = all(0 <= row + dy < height and 0 <= column + dx < width and mask[row + dy, column + dx]
                               for dy, dx in disk)
    return out


def blobs(seed: int, shape=(40, 56)) -> np.ndarray:
    """A mask of a few random discs and rectangles, some of them cut by the image border."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    for _ in range(4):
        centre = (int(rng.integers(-5, shape[1] + 5)), int(rng.integers(-5, shape[0] + 5)))
        cv2.circle(mask, centre, int(rng.integers(2, 12)), 1, -1)
        corner = (int(rng.integers(-5, shape[1])), int(rng.integers(-5, shape[0])))
        cv2.rectangle(mask, corner, (corner[0] + int(rng.integers(1, 15)), corner[1] + int(rng.integers(1, 15))), 1, -1)
    return mask.astype(bool)


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_erosion_keeps_the_pixels_whose_whole_disk_is_in_the_mask(seed, radius):
    mask = blobs(seed)
    assert mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()  # the border rule is exercised
    np.testing.assert_array_equal(erode(mask, radius), brute_force_erosion(mask, radius))


def back_projected(mask: np.ndarray, depth_m: np.ndarray, k: Intrinsics, erode_px: int, min_m=0.1, max_m=5.0):
    """docs/3d-targets.md's definition, written out: the eroded pixels (or the mask when nothing is left), those with valid
    depth, through K. Rows in row-major pixel order."""
    core = brute_force_erosion(mask, erode_px)
    core = core if core.any() else mask
    points = []
    for v, u in zip(*np.nonzero(core)):
        z = float(depth_m[v, u])
        if math.isfinite(z) and min_m <= z <= max_m:
            points.append(((u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z))
    return np.array(points, np.float64).reshape(-1, 3)


def noisy_depth(shape, seed: int) -> np.ndarray:
    """Depth in metres between 0.3 and 2 m, with holes (NaN, 0) and pixels beyond 5 m."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.3, 2.0, shape)
    holes = rng.random(shape)
    depth[holes < 0.08] = np.nan
    depth[(holes >= 0.08) & (holes < 0.12)] = 0.0
    depth[holes > 0.95] = 7.5
    return depth


@pytest.mark.parametrize("encoding", ["uint16 mm", "float32 m"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_region_points_back_project_the_eroded_pixels_with_valid_depth(seed, encoding):
    mask = blobs(seed)
    k = Intrinsics(51.0, 47.5, 27.3, 19.1, mask.shape[1], mask.shape[0])  # fx != fy, off centre: swaps show
    depth_m = noisy_depth(mask.shape, seed)
    if encoding == "uint16 mm":
        millimetres = np.nan_to_num(np.round(depth_m * 1000), nan=0).astype(np.uint16)
        depth, depth_m = DepthImage(millimetres, 0.001), millimetres / 1000.0
    else:
        depth = DepthImage(depth_m.astype(np.float32), 1.0)
    points = region_points(mask, depth, k, 2, 0.1, 5.0)
    expected = back_projected(mask, depth_m, k, 2)
    assert points.dtype == np.float32 and len(expected) > 20
    np.testing.assert_allclose(points, expected, atol=2e-6, rtol=1e-5)


def test_a_mask_the_erosion_empties_is_used_whole():
    mask = np.zeros((40, 56), bool)
    mask[10, 5:50] = True  # one pixel thick: no disk of radius 3 fits
    mask[20:23, 30] = True
    depth_m = np.full(mask.shape, 1.25)
    points = region_points(mask, DepthImage(depth_m.astype(np.float32), 1.0), PINHOLE, 3, 0.1, 5.0)
    assert len(points) == mask.sum()
    np.testing.assert_allclose(points, back_projected(mask, depth_m, PINHOLE, 0), atol=1e-6)


def single_pixel(shape):
    mask = np.zeros(shape, bool)
    mask[7, 11] = True
    return mask


def touching_every_border(shape):
    mask = np.zeros(shape, bool)
    mask[:, :6] = mask[:4, :] = mask[-5:, :] = mask[:, -3:] = True
    return mask


@pytest.mark.parametrize("name, make_mask, depth_value, expected_points", [
    ("empty mask", lambda shape: np.zeros(shape, bool), 1.0, 0),
    ("empty mask, no depth", lambda shape: np.zeros(shape, bool), np.nan, 0),
    ("one pixel", single_pixel, 1.0, 1),
    ("one pixel without depth", single_pixel, 0.0, 0),
    ("a frame touching every border", touching_every_border, 1.0, None),
    ("a frame touching every border, beyond max_m", touching_every_border, 9.0, 0),
])
def test_small_and_empty_regions_never_raise(name, make_mask, depth_value, expected_points):
    shape = (30, 40)
    mask = make_mask(shape)
    depth_m = np.full(shape, depth_value, np.float32)
    k = Intrinsics(30.0, 30.0, 19.5, 14.5, shape[1], shape[0])
    points = region_points(mask, DepthImage(depth_m, 1.0), k, 3, 0.1, 5.0)
    expected = back_projected(mask, depth_m, k, 3)
    assert points.shape == expected.shape and points.dtype == np.float32
    assert expected_points is None or len(points) == expected_points
    np.testing.assert_allclose(points, expected, atol=1e-6)
    geometry = region_geometry(mask, DepthImage(depth_m, 1.0), k, erode_px=3, min_m=0.1, max_m=5.0, min_points=1,
                               with_pose=True)
    if len(expected) == 0:
        assert geometry is None
    else:
        np.testing.assert_allclose(geometry.point, np.median(expected, axis=0), atol=1e-6)


def test_robust_point_is_the_median_of_each_axis():
    rng = np.random.default_rng(4)
    points = rng.normal(0.0, 1.0, (101, 3)).astype(np.float32)
    points[:30] += 50.0  # outliers move a mean, not a median
    expected = [sorted(points[:, axis].tolist())[50] for axis in range(3)]
    np.testing.assert_allclose(robust_point(points), expected, rtol=1e-6)


def tilted_normal(degrees: float, about_y: float = 0.0) -> np.ndarray:
    """A plane's normal facing the camera (-z), tilted about the camera's x axis and then its y axis."""
    a, b = math.radians(degrees), math.radians(about_y)
    normal = np.array([0.0, -math.sin(a), -math.cos(a)])
    return np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]]) @ normal


def in_plane_axes(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    across = np.cross(normal, [0.0, 1.0, 0.0])  # in the plane and horizontal, so for these normals near camera x
    across /= np.linalg.norm(across)
    return across, np.cross(normal, across)


def plane_patch(seed: int, normal: np.ndarray, inlier_share: float, points=2048, centre=(0.05, -0.02, 0.6)):
    """Points of a 10 x 10 cm patch of a plane with 2 mm noise along its normal, and (1 - inlier_share) of them
    uniform in the patch's bounding box, shuffled: (points, inlier flags)."""
    rng = np.random.default_rng(seed)
    across, along = in_plane_axes(normal)
    count = int(points * inlier_share)
    s, t = rng.uniform(-0.05, 0.05, (2, count))
    on_plane = (np.asarray(centre) + s[:, None] * across + t[:, None] * along
                + rng.normal(0.0, 0.002, count)[:, None] * normal)
    outliers = rng.uniform(on_plane.min(axis=0), on_plane.max(axis=0), (points - count, 3))
    order = rng.permutation(points)
    flags = np.arange(points) < count
    return np.concatenate([on_plane, outliers])[order], flags[order]


@pytest.mark.parametrize("tilt, about_y", [(0.0, 0.0), (30.0, 0.0), (55.0, 20.0), (-40.0, -35.0)])
def test_fit_plane_recovers_a_clean_plane(tilt, about_y):
    normal = tilted_normal(tilt, about_y)
    points, _ = plane_patch(0, normal, 1.0)
    fitted, inliers = fit_plane(points)
    assert line_angle_degrees(fitted, normal) < 0.5 and inliers.mean() > 0.99  # 2 mm noise: all but its tails


def test_fit_plane_finds_a_tilted_plane_among_three_times_as_many_outliers():
    normal = tilted_normal(30.0)
    errors = []
    for seed in range(40):
        points, on_plane = plane_patch(seed, normal, 0.25)
        fitted, inliers = fit_plane(points)
        errors.append(line_angle_degrees(fitted, normal))
        assert inliers[on_plane].mean() > 0.95  # the plane's own points are its inliers
    assert sum(error <= 3.0 for error in errors) >= 39, f"normal errors (degrees): {np.round(errors, 2)}"


def test_fit_plane_gives_up_on_points_that_span_no_plane():
    line = np.outer(np.linspace(0.0, 0.1, 300), [0.3, -0.2, 1.0]) + [0.0, 0.0, 0.5]
    assert fit_plane(line) is None and fit_plane(line[:2]) is None


PLANE_DISTANCE = 0.5
# cx halfway between two columns: a strip centred on the optical axis covers pixels symmetric about its centre line,
# so only the noise decides the x component of its main direction (the case the pose flipped on).
STRIP_CAMERA = Intrinsics(FX, FY, 319.5, CY, WIDTH, HEIGHT)


def strip_scene(normal: np.ndarray, vertical: bool):
    """The mask of a 2 x 12 cm strip on the plane {X : normal . X = -PLANE_DISTANCE}, centred on the optical axis,
    its long side along the plane's image-vertical axis (`vertical`) or its horizontal one; the plane's depth seen
    through STRIP_CAMERA; the strip's long direction."""
    k = STRIP_CAMERA
    u, v = np.meshgrid(np.arange(WIDTH), np.arange(HEIGHT))
    rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones((HEIGHT, WIDTH))], axis=-1)
    depth = -PLANE_DISTANCE / (rays @ normal)
    points = rays * depth[..., None]
    centre = np.array([0.0, 0.0, -PLANE_DISTANCE / normal[2]])
    across, along = in_plane_axes(normal)
    long_axis, short_axis = (along, across) if vertical else (across, along)
    mask = (np.abs((points - centre) @ long_axis) <= 0.06) & (np.abs((points - centre) @ short_axis) <= 0.01)
    return mask, depth, long_axis


@pytest.mark.parametrize("vertical", [True, False], ids=["vertical strip", "horizontal strip"])
def test_the_pose_of_a_still_strip_keeps_its_x_axis_over_noisy_frames(vertical):
    normal = tilted_normal(20.0)
    mask, depth, long_axis = strip_scene(normal, vertical)
    assert mask.sum() > 2000
    with_feedback, without = [], []
    for seed in range(40):
        noisy = DepthImage((depth + np.random.default_rng(seed).normal(0.0, 0.002, depth.shape)).astype(np.float32),
                           1.0)
        previous_x = with_feedback[-1] if with_feedback else None  # as the node: the last published pose's x
        fed = region_geometry(mask, noisy, STRIP_CAMERA, with_pose=True, previous_x=previous_x, **RULE).rotation
        alone = region_geometry(mask, noisy, STRIP_CAMERA, with_pose=True, **RULE).rotation
        for rotation in (fed, alone):
            assert line_angle_degrees(rotation[:, 0], long_axis) < 3.0
            assert angle_degrees(rotation[:, 2], normal) < 3.0  # z out of the surface, toward the camera
        with_feedback.append(fed[:, 0])
        without.append(alone[:, 0])
    steps = [angle_degrees(a, b) for a, b in zip(with_feedback, with_feedback[1:])]
    assert max(steps) < 5.0, f"x turned by {max(steps):.1f} degrees between two frames"
    # Without a previous pose, the rule alone: down in the image for the vertical strip, right for the other.
    expected = np.array([0.0, 1.0, 0.0]) if vertical else np.array([1.0, 0.0, 0.0])
    signs = [x @ expected > 0 for x in without]
    assert all(signs), f"{signs.count(False)} of 40 frames point the other way"


def test_the_previous_x_axis_decides_the_sign():
    normal = tilted_normal(20.0)
    mask, depth, long_axis = strip_scene(normal, vertical=False)
    depth_image = DepthImage(depth.astype(np.float32), 1.0)
    for previous_x in (long_axis, -long_axis, -long_axis + 0.9 * normal):  # the last one: far off the plane, still
        rotation = region_geometry(mask, depth_image, STRIP_CAMERA, with_pose=True, previous_x=previous_x,
                                   **RULE).rotation
        assert rotation[:, 0] @ previous_x > 0


def test_a_region_carries_its_pose_as_a_quaternion_and_its_cloud_evenly_subsampled():
    """What the messages read, so that building them never calls back into the geometry: the quaternion of the
    pose (checked by turning the axes with it, written out here) and the cloud within max_cloud_points."""
    normal = tilted_normal(20.0)
    mask, depth, _ = strip_scene(normal, vertical=False)
    depth_image = DepthImage(depth.astype(np.float32), 1.0)
    region = region_geometry(mask, depth_image, STRIP_CAMERA, with_pose=True, max_cloud_points=100, **RULE)
    x, y, z, w = region.quaternion
    for axis in range(3):  # v' = v + 2w (q x v) + 2 q x (q x v), q = (x, y, z)
        v, q = np.eye(3)[axis], np.array([x, y, z])
        turned = v + 2 * w * np.cross(q, v) + 2 * np.cross(q, np.cross(q, v))
        np.testing.assert_allclose(turned, region.rotation[:, axis], atol=1e-9)
    every = np.linspace(0, len(region.points) - 1, 100).round().astype(int)
    assert len(region.points) > 1000 and np.array_equal(region.cloud, region.points[every])
    whole = region_geometry(mask, depth_image, STRIP_CAMERA, with_pose=False, **RULE)
    assert whole.quaternion is None and np.array_equal(whole.cloud, whole.points)


def test_the_approach_frame_is_a_right_handed_rotation_on_the_plane():
    normal = tilted_normal(35.0, 25.0)
    points, _ = plane_patch(1, normal, 1.0)
    rotation = approach_frame(points, np.median(points, axis=0))
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-9)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    assert angle_degrees(rotation[:, 2], normal) < 0.5  # `normal` faces the camera already


def random_rotations(count: int, seed: int):
    """Rotation matrices from axis-angle through OpenCV's Rodrigues, with their quaternions by the half-angle
    formula: (R, (x, y, z, w)). Angles up to 180 degrees, so every branch of a matrix-to-quaternion conversion
    is taken."""
    rng = np.random.default_rng(seed)
    angles = np.concatenate([rng.uniform(0.0, math.pi, count - 4), [0.0, math.pi, math.pi, math.pi]])
    axes = rng.normal(size=(count, 3))
    axes[-3:] = np.eye(3)  # half-turns about x, y and z
    for angle, axis in zip(angles, axes):
        axis = axis / np.linalg.norm(axis)
        rotation, _ = cv2.Rodrigues(axis * angle)
        yield rotation, (*(axis * math.sin(angle / 2)), math.cos(angle / 2))


def test_quaternion_of_a_rotation_and_back():
    for rotation, expected in random_rotations(60, 5):
        q = np.array(quaternion(rotation))
        assert abs(abs(q @ np.array(expected)) - 1.0) < 1e-9  # q and -q are one rotation
        np.testing.assert_allclose(rotation_from_quaternion(tuple(expected)), rotation, atol=1e-12)


@pytest.mark.parametrize("count, limit", [(10, 50), (50, 50), (51, 50), (1000, 7), (12345, 2048)])
def test_even_subsample_keeps_both_ends_and_an_even_stride(count, limit):
    points = np.arange(count, dtype=np.float64)[:, None] * np.ones(3)
    kept = even_subsample(points, limit)[:, 0].astype(int)
    assert len(kept) == min(count, limit) and kept[0] == 0 and kept[-1] == count - 1
    if count > limit:
        strides = np.diff(kept)
        assert strides.max() - strides.min() <= 1 and abs(strides.mean() - (count - 1) / (limit - 1)) < 1e-9


def source_pixels_under_centres(source_count: int, count: int) -> list[set[int]]:
    """For each of `count` pixels spread over `source_count` ones, the source pixel its centre lies in, computed
    exactly; both neighbours where the centre falls on the boundary between them."""
    pixels = []
    for index in range(count):
        centre = Fraction(2 * index + 1, 2) * Fraction(source_count, count)
        pixel = math.floor(centre)
        pixels.append({pixel - 1, pixel} if centre == pixel else {pixel})
    return pixels


@pytest.mark.parametrize("depth_shape", [(48, 64), (30, 40), (96, 128), (45, 50), (48, 64 * 2)])
def test_mask_on_depth_grid_takes_the_mask_pixel_under_each_depth_pixel_centre(depth_shape):
    mask = blobs(3, (48, 64))
    resampled = mask_on_depth_grid(mask, depth_shape)
    rows = source_pixels_under_centres(mask.shape[0], depth_shape[0])
    columns = source_pixels_under_centres(mask.shape[1], depth_shape[1])
    assert resampled.shape == depth_shape
    for row in range(depth_shape[0]):
        for column in range(depth_shape[1]):
            assert resampled[row, column] in {mask[r, c] for r in rows[row] for c in columns[column]}, (row, column)


def rays_seen_at(pixels: np.ndarray, project) -> np.ndarray:
    """[N, 3] rays (x, y, 1) that `project` (a lens with distortion: [N, 1, 3] points -> [N, 1, 2] pixels) maps to
    `pixels`, by Newton's method on the forward projection with a numerical Jacobian."""
    rays = np.ones((len(pixels), 3))
    rays[:, :2] = 0.0
    step = 1e-6
    for _ in range(30):
        seen = project(rays[:, None, :])[:, 0]
        jacobian = np.stack([(project((rays + step * np.eye(3)[axis])[:, None, :])[:, 0] - seen) / step
                             for axis in range(2)], axis=2)  # [N, pixel (u, v), ray (x, y)]
        rays[:, :2] -= np.linalg.solve(jacobian, (seen - pixels)[..., None])[..., 0]
    assert np.abs(project(rays[:, None, :])[:, 0] - pixels).max() < 1e-6  # converged everywhere
    return rays


@pytest.mark.parametrize("model, coefficients", [
    ("plumb_bob", (-0.31, 0.11, 0.0012, -0.0009, -0.018)),
    ("rational_polynomial", (0.42, -0.21, 0.0007, 0.0011, 0.09, 0.71, -0.12, 0.15)),
    ("equidistant", (0.06, -0.012, 0.004, -0.001)),
])
def test_distorted_pixels_are_back_projected_to_the_points_seen_there(model, coefficients):
    k = PINHOLE.camera_matrix if model != "equidistant" else np.array([[380.0, 0, CX], [0, 376.0, CY], [0, 0, 1]])
    distortion = np.array(coefficients)
    if model == "equidistant":
        def project(points):
            return cv2.fisheye.projectPoints(points, np.zeros(3), np.zeros(3), k, distortion)[0]
    else:
        def project(points):
            return cv2.projectPoints(points, np.zeros(3), np.zeros(3), k, distortion)[0]
    # Every 9th pixel of the image, corners included, and the point of a tilted plane seen at each.
    rows, columns = (grid.ravel() for grid in np.meshgrid(np.arange(0, HEIGHT, 9), np.arange(0, WIDTH, 9),
                                                          indexing="ij"))
    rays = rays_seen_at(np.stack([columns, rows], axis=1).astype(np.float64), project)
    normal = tilted_normal(25.0, 15.0)
    points = rays * (-0.45 / (rays @ normal))[:, None]
    depth = np.zeros((HEIGHT, WIDTH), np.float32)
    depth[rows, columns] = points[:, 2]
    mask = depth > 0
    lens = Intrinsics(k[0, 0], k[1, 1], k[0, 2], k[1, 2], WIDTH, HEIGHT, model, coefficients)
    recovered = region_points(mask, DepthImage(depth, 1.0), lens, 0, 0.1, 5.0)
    errors = np.linalg.norm(recovered - points, axis=1)
    assert errors.max() < 1e-4, f"{(errors >= 1e-4).sum()} of {len(errors)} points off by up to {errors.max():.5f} m"
    pinhole = Intrinsics(k[0, 0], k[1, 1], k[0, 2], k[1, 2], WIDTH, HEIGHT)  # the same lens, distortion ignored
    ignored = np.linalg.norm(region_points(mask, DepthImage(depth, 1.0), pinhole, 0, 0.1, 5.0) - points, axis=1)
    assert ignored.max() > 0.01  # the test sees what distortion does


@pytest.mark.parametrize("model, coefficients", [("kannala_brandt", (0.1, 0.0, 0.0, 0.0)),
                                                 ("equidistant", (0.1, 0.0, 0.0, 0.0, 0.0)),
                                                 ("plumb_bob", (0.1, 0.0, 0.0))])
def test_a_distortion_that_cannot_be_undone_is_named(model, coefficients):
    mask = np.zeros((HEIGHT, WIDTH), bool)  # even for a region without pixels: the CameraInfo is what is wrong
    lens = Intrinsics(FX, FY, CX, CY, WIDTH, HEIGHT, model, coefficients)
    with pytest.raises(ValueError, match=f"'{model}' with {len(coefficients)} coefficients.*plumb_bob"):
        region_points(mask, DepthImage(np.ones((HEIGHT, WIDTH), np.float32), 1.0), lens, 3, 0.1, 5.0)


@pytest.mark.parametrize("model, coefficients", [("", ()), ("plumb_bob", (0.0,) * 5), ("unknown", (0.0,) * 4)])
def test_no_distortion_is_plain_back_projection(model, coefficients):
    mask = blobs(1, (HEIGHT, WIDTH))
    depth_m = noisy_depth((HEIGHT, WIDTH), 1)
    lens = Intrinsics(FX, FY, CX, CY, WIDTH, HEIGHT, model, coefficients)
    points = region_points(mask, DepthImage(depth_m.astype(np.float32), 1.0), lens, 0, 0.1, 5.0)
    np.testing.assert_allclose(points, back_projected(mask, depth_m.astype(np.float32), PINHOLE, 0), atol=1e-6)
