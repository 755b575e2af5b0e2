"""The demo as a user runs it: the node over DDS with the shipped weights, two sounds in turn."""
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from avag_ros.tools.demo import demo_scene
from avag_ros.parameters import spec
from conftest import REPO
from depth_truth import expected_point
from ros_support import fresh_domain_id

SEED = 3


@pytest.mark.slow  # 45 s of demo in real time, plus a node's start
def test_demo_masks_follow_the_sound_from_each_onset(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "ROS_DOMAIN_ID": str(fresh_domain_id())}
    result = subprocess.run([sys.executable, "-m", "avag_ros.demo", "--seconds", "45", "--seed", str(SEED),
                             "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every sound of both passes of the clip, from its onset: no mask of the other object before the first right
    # one after quiet, at most 2 masks of the old sound after a change (issue 30's goals; a mask of neither may
    # come while the model's answer forms); nothing in quiet. The mug's every onset gets a right mask (IoU >= 0.5).
    # The shipped weights outline this scene's hammer at IoU 0.49 to 0.54 (avag_ros/data/demo_avagformer_b0.md:
    # their hammer is their weakest category), so its masks are held to showing the hammer, not to 0.5.
    sounds = re.findall(r"    (\w+) ([\d.]+) s after (quiet|the \w+): (\d+) onsets, (\d+) with a right mask; .*?; "
                        r"(\d+) masks before it, (\d+) of another object", result.stdout)
    assert len(sounds) == 4, result.stdout
    for name, seconds, after, onsets, right, _, others in sounds:
        assert int(onsets) == 2 and int(others) <= (0 if after == "quiet" else 2 * int(onsets)), result.stdout
        assert name == "hammer" or int(right) == 2, result.stdout
    assert "masks in quiet: 0 " in result.stdout, result.stdout
    scores = dict(re.findall(r"mIoU_f while the (\w+) sounds: ([\d.]+) over \d+ masks", result.stdout))
    assert set(scores) == {"hammer", "mug"}, result.stdout
    # each object's mask lands on that object from the onsets on, not on the other one
    assert float(scores["mug"]) >= 70 and float(scores["hammer"]) >= 45, result.stdout
    assert (out / "overlay_hammer.png").is_file() and (out / "overlay_mug.png").is_file()
    # 3D: the node's point where a perfect mask would put it, give or take the mask's own error; the approach axis
    # along the true surface normal (flat for the hammer, tilted 25 degrees for the mug).
    targets = re.findall(r"3D while the (\w+) sounds: .*?, approach axis ([\d.]+) deg .*?; median point "
                         r"\(([-\d., ]+)\) m", result.stdout)
    assert {name for name, _, _ in targets} == {"hammer", "mug"}, result.stdout
    assert all(float(degrees) < 5 for _, degrees, _ in targets), result.stdout
    # The true point: docs/3d-targets.md's definition on the true function region of the scene the demo streamed, in numpy.
    scene, depth_scene = demo_scene(np.random.default_rng(SEED))
    camera = depth_scene.intrinsics
    rule = {name: spec(f"depth.{name}").default for name in ("erode_px", "min_m", "max_m")}
    for name, _, point in targets:
        index = [c.object for c in scene.categories].index(name)
        truth_mask = scene.function_masks[index]
        assert np.array_equal(cv2.imread(str(out / f"ground_truth_{name}.png"), cv2.IMREAD_GRAYSCALE) > 127,
                              truth_mask), "the test rebuilt another scene than the demo streamed"
        truth = expected_point(truth_mask, depth_scene.depth_m, {"fx": camera.fx, "fy": camera.fy, "cx": camera.cx,
                                                                 "cy": camera.cy}, **rule)
        error_mm = 1000 * np.linalg.norm(np.array([float(c) for c in point.split(",")]) - truth)
        assert error_mm < 40, f"the {name}'s point is {error_mm:.1f} mm from the true one\n{result.stdout}"
    assert (out / "targets_3d.png").is_file()
