"""End-to-end latency of the grounding node over DDS on loopback, and its overhead beyond the model.

    python bench/node_latency.py [--model avagformer_b0] [--width 640 --height 480] [--frames 20]

The node (random weights, file audio) spins in its own thread of this process; a separate prober node
publishes one image at a time over DDS and waits for its function mask (no queueing), timing publish -> receipt.
The same image and sound are first timed through the predictor alone (pre- and post-processing included) and
through the bare model forward. Overhead = median over frames of (round trip - the node's own predictor.predict time for that frame): DDS
transport both ways, image conversion, mask/overlay/polygon building and publishing, thread hand-offs.
"""
from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
import soundfile
import torch
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from avag_core import AffordancePredictor, build_model
from avag_core.weights import save_checkpoint
from avag_ros.conversions import rgb_to_image
from avag_ros.grounding_node import GroundingNode


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
        self.arrived = False
        self.expected = None
        self.create_subscription(Image, "affordance/function_mask", self._on_mask, 10)

    def _on_mask(self, msg: Image) -> None:
        if self.expected is not None and msg.header.stamp == self.expected:
            self.arrived = True

    def round_trip_ms(self, image: np.ndarray, timeout: float = 30.0) -> float | None:
        header = Header(frame_id="camera", stamp=self.get_clock().now().to_msg())
        msg = rgb_to_image(image, "bgr8", header)
        self.arrived = False
        self.expected = header.stamp
        start = time.perf_counter()
        self.publisher.publish(msg)
        while not self.arrived:  # spinning here wakes as soon as the mask arrives
            if time.perf_counter() - start > timeout:
                return None
            rclpy.spin_once(self, timeout_sec=0.05)
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

    rclpy.init(domain_id=random.randint(60, 100))  # ids above 101 can collide with ephemeral ports
    node = GroundingNode(parameter_overrides=[
        Parameter("checkpoint", value=str(checkpoint)), Parameter("audio.source", value="file"),
        Parameter("audio.file", value=str(tone)), Parameter("max_rate_hz", value=0.0),
        Parameter("device", value="cpu")])
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)])
    spinner.start()
    prober = Prober()
    try:
        time.sleep(1.0)  # the file source fills the audio buffer
        deadline = time.monotonic() + 120
        while prober.round_trip_ms(image, timeout=5.0) is None:  # discovery and the first inference
            if time.monotonic() > deadline:
                raise SystemExit("the node never answered")
        # Pair each round trip with the node's own predict time for that frame, so that the run-to-run noise
        # of this shared machine cancels out of the difference.
        trips, predicts = [], []
        for _ in range(args.frames):
            trips.append(prober.round_trip_ms(image))
            predicts.append(node.stats.last_model_s * 1000)
    finally:
        stop.set()
        spinner.join()
        node.trigger_deactivate()
        rclpy.shutdown()
    pairs = [(t, p) for t, p in zip(trips, predicts) if t is not None]
    trips_ms = np.array([t for t, _ in pairs])
    overhead_ms = np.array([t - p for t, p in pairs])
    print(f"{args.model} (random weights), {args.width}x{args.height} bgr8 over DDS loopback, "
          f"{len(trips)} frames, cpu x{torch.get_num_threads()}")
    print("| measure | median ms | p95 ms |")
    print("|---|---|---|")
    print(f"| model forward | {forward_ms:.1f} | |")
    print(f"| predictor.predict (resize, audio front-end, forward, masks) | {predict_ms:.1f} | |")
    print(f"| publish -> mask received | {np.median(trips_ms):.1f} | {np.percentile(trips_ms, 95):.1f} |")
    print(f"| predict inside the node | {np.median([p for _, p in pairs]):.1f} | |")
    print(f"| node overhead beyond its predict (per frame) | {np.median(overhead_ms):.1f} "
          f"| {np.percentile(overhead_ms, 95):.1f} |")


if __name__ == "__main__":
    main()
