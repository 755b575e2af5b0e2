"""End-to-end latency of the grounding node over DDS on loopback, and its overhead beyond the model.

    python bench/node_latency.py [--model avagformer_b0] [--width 640 --height 480] [--frames 20]

The node runs as its own process (`python -m avag_ros.grounding_node`, random weights, file audio). This
process publishes one image at a time and waits for its function mask (no queueing), timing publish -> receipt.
The same image and sound are first timed through the predictor alone (pre- and post-processing included) and
through the bare model forward. Overhead = end-to-end median - predictor median.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
import soundfile
import torch
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from avag_core import AffordancePredictor, build_model
from avag_core.weights import save_checkpoint
from avag_ros.conversions import rgb_to_image


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


class Prober(Node):
    def __init__(self) -> None:
        super().__init__("latency_prober")
        self.publisher = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.arrived = threading.Event()
        self.expected = None
        self.create_subscription(Image, "affordance/function_mask", self._on_mask, 10)

    def _on_mask(self, msg: Image) -> None:
        if self.expected is not None and msg.header.stamp == self.expected:
            self.arrived.set()

    def round_trip_ms(self, image: np.ndarray, timeout: float = 30.0) -> float | None:
        header = Header(frame_id="camera", stamp=self.get_clock().now().to_msg())
        msg = rgb_to_image(image, "bgr8", header)
        self.arrived.clear()
        self.expected = header.stamp
        start = time.perf_counter()
        self.publisher.publish(msg)
        if not self.arrived.wait(timeout):
            return None
        return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="avagformer_b0")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="avag_latency_"))
    torch.manual_seed(0)
    checkpoint = work / "model.pt"
    save_checkpoint(checkpoint, build_model(args.model))
    tone = work / "tone.wav"
    t = np.arange(3 * 16000) / 16000
    soundfile.write(tone, (0.3 * np.sin(2 * np.pi * 660 * t)).astype(np.float32), 16000)
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)

    predictor = AffordancePredictor.from_checkpoint(checkpoint, device="cpu")
    audio = (0.3 * np.sin(2 * np.pi * 660 * t[:32000])).astype(np.float32)
    predict_ms = median_ms(lambda: predictor.predict(image, audio, 16000), 10)
    pixels = predictor.prepare_image(image)
    windows = predictor.prepare_audio(audio, 16000)[None]
    with torch.inference_mode():
        forward_ms = median_ms(lambda: predictor.model(pixels, windows), 10)

    domain = random.randint(120, 200)
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain)}
    node = subprocess.Popen([sys.executable, "-m", "avag_ros.grounding_node", "--ros-args", "-p",
                             f"checkpoint:={checkpoint}", "-p", "audio.source:=file", "-p", f"audio.file:={tone}",
                             "-p", "max_rate_hz:=0.0", "-p", "device:=cpu", "--log-level", "warn"], env=env)
    rclpy.init(domain_id=domain)
    prober = Prober()
    spinner = threading.Thread(target=rclpy.spin, args=(prober,), daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 120
        while prober.round_trip_ms(image, timeout=2.0) is None:  # node start-up and first inference
            if time.monotonic() > deadline:
                raise SystemExit("the node never answered")
        trips = [trip for trip in (prober.round_trip_ms(image) for _ in range(args.frames)) if trip is not None]
    finally:
        node.terminate()
        node.wait(timeout=30)
        rclpy.shutdown()
    trips_ms = np.array(trips)
    print(f"{args.model} (random weights), {args.width}x{args.height} bgr8 over DDS loopback, "
          f"{len(trips)} frames, cpu x{torch.get_num_threads()}")
    print("| measure | median ms | p95 ms |")
    print("|---|---|---|")
    print(f"| model forward | {forward_ms:.1f} | |")
    print(f"| predictor.predict (resize, audio front-end, forward, masks) | {predict_ms:.1f} | |")
    print(f"| publish -> mask received | {np.median(trips_ms):.1f} | {np.percentile(trips_ms, 95):.1f} |")
    print(f"| node overhead beyond predict | {np.median(trips_ms) - predict_ms:.1f} | |")
    print(f"| node overhead beyond model forward | {np.median(trips_ms) - forward_ms:.1f} | |")


if __name__ == "__main__":
    main()
