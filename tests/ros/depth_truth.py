"""A region's 3D point by the definition in docs/3d-targets.md, in plain numpy: the truth the 3D tests compare
the node against, computed without avag_ros.depth.geometry."""
import numpy as np


def eroded(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels whose whole disk of `radius` is in the mask, outside the image counting as outside."""
    padded = np.pad(mask, radius, constant_values=False)
    out = np.ones_like(mask)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy <= radius * radius:
                out &= padded[radius + dy:radius + dy + mask.shape[0], radius + dx:radius + dx + mask.shape[1]]
    return out


def expected_point(mask: np.ndarray, depth_m: np.ndarray, k: dict, erode_px: int, min_m: float = 0.1,
                   max_m: float = 5.0) -> np.ndarray:
    """The per-axis median of the eroded mask's valid pixels back-projected through K (fx, fy, cx, cy)."""
    if mask.shape != depth_m.shape:  # the depth pixel takes the mask pixel under its centre
        rows = ((np.arange(depth_m.shape[0]) + 0.5) * mask.shape[0] / depth_m.shape[0]).astype(int)
        columns = ((np.arange(depth_m.shape[1]) + 0.5) * mask.shape[1] / depth_m.shape[1]).astype(int)
        mask = mask[rows][:, columns]
    core = eroded(mask, erode_px)
    core = core if core.any() else mask
    v, u = np.nonzero(core & np.isfinite(depth_m) & (depth_m >= min_m) & (depth_m <= max_m))
    z = depth_m[v, u].astype(np.float64)
    return np.median(np.stack([(u - k["cx"]) * z / k["fx"], (v - k["cy"]) * z / k["fy"], z], axis=1), axis=0)
