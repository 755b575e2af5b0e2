"""avag_ros.ground_service: checking and decoding a GroundAffordance request, the queue to the inference thread, and
the service itself over real DDS with the client in its own process."""
import json
import math
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from avag_ros.ground_service import GroundQueue, GroundService, PendingGround, decode_request
from ros_support import Probe, ros_domain

audio_msgs = pytest.importorskip("audio_common_msgs.msg", reason="interfaces not built (scripts/build_interfaces.sh)")
avag_srvs = pytest.importorskip("avag_interfaces.srv", reason="interfaces not built (scripts/build_interfaces.sh)")

CLIENT = Path(__file__).with_name("ground_client.py")


def request(data: bytes, sample_format="S16LE", channels=2, sample_rate=16000, coding_format="wave", image=None):
    out = avag_srvs.GroundAffordance.Request()
    out.audio_info = audio_msgs.AudioInfo(channels=channels, sample_rate=sample_rate, sample_format=sample_format,
                                          coding_format=coding_format, bitrate=192)
    out.audio.data = data
    if image is not None:
        out.image = image
    return out


def rgb_message(height=6, width=5) -> Image:
    rgb = np.arange(height * width * 3, dtype=np.uint8).reshape(height, width, 3)
    return Image(height=height, width=width, encoding="rgb8", step=width * 3, data=rgb.tobytes())


def test_a_stereo_s16_clip_becomes_the_mean_of_its_channels():
    rng = np.random.default_rng(0)
    pairs = [(int(a), int(b)) for a, b in rng.integers(-32768, 32768, (8000, 2))]
    data = b"".join(struct.pack("<hh", a, b) for a, b in pairs)
    decoded = decode_request(request(data, sample_rate=44100))
    assert decoded.sample_rate == 44100 and decoded.image is None  # width 0: the newest camera frame
    expected = [(a + b) / 2 / 32768 for a, b in pairs]
    assert np.allclose(decoded.audio, expected, atol=1e-6)
    image = rgb_message()
    assert decode_request(request(data, image=image)).image is image


@pytest.mark.parametrize("change, reason", [
    ({"coding_format": "mp3"}, "coding_format 'mp3' is not PCM"),
    ({"sample_format": "S24LE"}, "sample_format 'S24LE'"),
    ({"channels": 0}, "channels is 0"),
    ({"sample_rate": 1000}, "sample_rate 1000 Hz"),
    ({"data": b""}, "the clip is empty"),
    ({"data": bytes(4001)}, "4001 bytes are no whole number of S16LE frames of 2 channel"),
    ({"data": struct.pack("<2f", math.nan, 0.0) * 2000, "sample_format": "F32LE"}, "NaN or infinite"),
    ({"data": bytes(4 * 800)}, "the clip is 50 ms long; at least 100 ms"),
    ({"image": Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(5))}, "image: image data has 5 bytes"),
])
def test_a_bad_request_is_refused_with_its_reason(change, reason):
    arguments = {"data": bytes(4 * 16000), **change}
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        decode_request(request(arguments.pop("data"), **arguments))


def test_the_queue_refuses_while_closed_and_answers_what_waits_when_closed():
    woken = []
    queue = GroundQueue(lambda: woken.append(1))
    refused = PendingGround(None)
    queue.submit(refused)
    assert refused.wait(0) and not refused.success and "not active" in refused.message and not woken
    queue.open()
    first, second = PendingGround(None), PendingGround(None)
    queue.submit(first)
    queue.submit(second)
    assert len(woken) == 2 and queue.waiting()
    assert queue.take() is first
    queue.close("the node is shutting down")
    assert second.wait(0) and second.message == "the node is shutting down"
    assert queue.take() is None


def write_requests(folder: Path, specs: list[dict]) -> Path:
    path = folder / "requests.json"
    path.write_text(json.dumps(specs))
    return path


def clip_file(folder: Path, name: str, data: bytes) -> str:
    path = folder / name
    path.write_bytes(data)
    return str(path)


def run_client(context, service: str, requests: Path) -> list[dict]:
    env = {**os.environ, "ROS_DOMAIN_ID": str(context.get_domain_id())}
    done = subprocess.run([sys.executable, str(CLIENT), service, str(requests)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_service_waits_for_the_inference_thread_without_holding_back_the_node(tmp_path):
    """The answer comes from another thread a second later; meanwhile the node's own callbacks (on the events
    executor, as in production) keep receiving camera images. A bad clip is answered at once with the reason."""
    with ros_domain() as (context, add):
        server = add(Node("affordance_grounding", context=context))
        arrivals = []
        server.create_subscription(Image, "image", lambda msg: arrivals.append(time.monotonic()),
                                 qos_profile_sensor_data)
        wake = threading.Event()
        queue = GroundQueue(wake.set)
        queue.open()
        service = GroundService(server, queue)
        answered_between = []
        stop = threading.Event()

        def inference_thread():
            while not stop.is_set():
                if not wake.wait(0.05):
                    continue
                wake.clear()
                while (pending := queue.take()) is not None:
                    taken = time.monotonic()
                    time.sleep(1.0)  # the model
                    answered_between.append((taken, time.monotonic()))
                    pending.answer(True, f"{pending.request.audio.size} samples at {pending.request.sample_rate}")

        worker = threading.Thread(target=inference_thread, daemon=True)
        worker.start()
        probe = add(Probe(context, {}))
        camera_stop = threading.Event()
        camera = threading.Thread(target=lambda: [probe.publish_rgb(np.zeros((4, 4, 3), np.uint8))
                                                  for _ in iter(lambda: camera_stop.wait(0.02), True)], daemon=True)
        camera.start()
        try:
            assert service.name == "/affordance_grounding/ground"
            good = clip_file(tmp_path, "good.raw", bytes(2 * 8000))
            mp3 = clip_file(tmp_path, "mp3.raw", b"ID3" + bytes(3000))
            specs = [{"channels": 1, "sample_rate": 16000, "sample_format": "S16LE", "coding_format": "wave",
                      "audio": good, "image": None},
                     {"channels": 1, "sample_rate": 16000, "sample_format": "S16LE", "coding_format": "mp3",
                      "audio": mp3, "image": None}]
            answers = run_client(context, service.name, write_requests(tmp_path, specs))
        finally:
            camera_stop.set()
            camera.join()
            stop.set()
            worker.join()
            service.destroy()
        assert answers[0]["success"] and answers[0]["message"] == "8000 samples at 16000"
        assert answers[0]["seconds"] >= 1.0
        assert not answers[1]["success"] and "coding_format 'mp3' is not PCM" in answers[1]["message"]
        (taken, answered), = answered_between
        during = [t for t in arrivals if taken + 0.1 < t < answered - 0.1]
        assert len(during) >= 5, f"{len(during)} images reached the node while a request waited"
