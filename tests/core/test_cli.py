import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO, sample_dir


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "avag_core.predict", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def read_gray(path):
    return cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("image_name, audio_name", [
    ("hammer/hit/Flickr1_Hammer (1140).jpg", "hammer/hit/QFCLKdTGD-c_0.66_9.05.mp3"),
    ("switch/turn_on_or_off/OIDV7_17c2154b12973128.jpg", "switch/turn_on_or_off/-9dAYhxq0mM_8.25_9.35.mp3"),
])
def test_cli_on_real_samples_with_awkward_names(tmp_path, image_name, audio_name):
    root = sample_dir()
    out = tmp_path / "out (1)"
    result = run_cli("--image", root / image_name, "--audio", root / audio_name, "--model", "avagformer_b0",
                     "--image-size", "64", "--device", "cpu", "--out", out)
    assert result.returncode == 0, result.stderr
    height, width = cv2.imdecode(np.fromfile(root / image_name, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    for name in ("function_mask.png", "dependency_mask.png"):
        mask = read_gray(out / name)
        assert mask.shape == (height, width) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
    assert read_gray(out / "overlay.png").shape == (height, width, 3)
    assert "RANDOM weights" in result.stderr


def test_cli_accepts_leading_dash_relative_name(tmp_path):
    folder = sample_dir() / "switch" / "turn_on_or_off"
    result = run_cli("--image", "OIDV7_803f1fb3af0e2309.jpg", "--audio=-9dAYhxq0mM_8.25_9.35.mp3",
                     "--model", "avagformer_b0", "--image-size", "64", "--device", "cpu", "--out", tmp_path,
                     cwd=folder)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "function_mask.png").is_file()


def test_cli_reports_bad_input_without_traceback(tmp_path):
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    result = run_cli("--image", corrupt, "--audio", tmp_path / "missing.wav", "--model", "avagformer_b0",
                     "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "error: cannot decode image file" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("--image", tmp_path / "nope.png", "--audio", "x.wav", "--model", "avagformer_b0",
                     "--out", tmp_path / "out")
    assert result.returncode == 2 and "image file not found" in result.stderr
