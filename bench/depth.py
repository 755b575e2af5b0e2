"""Cost of the node's 3D path per frame at 640x480: what runs on the inference thread after the masks.

    python bench/depth.py [--frames 300] [--encoding 16UC1]

One frame: decode the depth message, place the masks on its grid, compute both regions' geometry (erosion,
back-projection, median point; RANSAC and least-squares plane and main direction for the function region), and
build the point, pose, cloud and marker messages (the node builds clouds and markers only while someone
subscribes to them; here they always are). DDS publishing is not included (bench/node_latency.py measures
the node end to end). Masks and depth are the demo scene's (avag_ros.tools.demo_depth) at 640x640, cropped to
640x480: real object shapes, a tilted table, holes at depth edges. Prints the median and p95 in ms and each region's
pixel count. Goal: at most 3 ms median.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from std_msgs.msg import Header

from avag_core.data.synthetic import CATEGORIES, render_scene
from avag_ros.depth.geometry import Intrinsics, region_geometry
from avag_ros.depth.pairing import depth_grid_intrinsics
from avag_ros.messages.depth import depth_image, metres_to_depth_image
from avag_ros.messages.targets import affordance_markers, point_stamped, points_to_cloud, pose_stamped
from avag_ros.parameters import spec
from avag_ros.tools.demo_depth import render_depth

TOP, HEIGHT = 80, 480


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--encoding", default="16UC1", choices=["16UC1", "32FC1"])
    args = parser.parse_args()
    scene = render_scene(np.random.default_rng(3), size=640, categories=list(CATEGORIES[:3]))
    depth_scene = render_depth(scene)
    k = depth_scene.intrinsics
    intrinsics = Intrinsics(k.fx, k.fy, k.cx, k.cy - TOP, 640, HEIGHT)
    crop = slice(TOP, TOP + HEIGHT)
    masks = {"function": scene.function_masks[0][crop], "dependency": scene.dependency_masks[0][crop]}
    header = Header(frame_id="camera_depth_optical_frame")
    message = metres_to_depth_image(depth_scene.depth_m[crop], args.encoding, header)
    rule = {name: spec(f"depth.{name}").default for name in ("erode_px", "min_m", "max_m", "min_points")}
    cloud_limit = spec("depth.max_cloud_points").default

    def frame() -> None:
        depth = depth_image(message)
        grid = depth_grid_intrinsics(intrinsics, depth.shape, masks["function"].shape)
        regions = {}
        for name, mask in masks.items():
            region = region_geometry(mask, depth, grid, with_pose=name == "function", max_cloud_points=cloud_limit,
                                     **rule)
            regions[name] = region
            point_stamped(region.point, header)
            points_to_cloud(region.cloud, header)
        pose_stamped(regions["function"], header)
        affordance_markers(regions, header)

    for _ in range(10):
        frame()
    times = []
    for _ in range(args.frames):
        started = time.perf_counter()
        frame()
        times.append((time.perf_counter() - started) * 1000)
    print(f"3D path per 640x480 frame ({args.encoding}, function region {int(masks['function'].sum())} px, "
          f"dependency region {int(masks['dependency'].sum())} px): median {statistics.median(times):.2f} ms, "
          f"p95 {np.percentile(times, 95):.2f} ms over {args.frames} frames")


if __name__ == "__main__":
    main()
