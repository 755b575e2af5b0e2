"""End-to-end latency of the grounding node over DDS on loopback, and its overhead beyond the model.

    python bench/node_latency.py [--model avagformer_b0 | --checkpoint CKPT_OR_EXPORT] [--backend torch]
                                 [--precision fp32] [--width 640 --height 480] [--frames 20]

The node (random weights of --model, or --checkpoint: a .pt or an export folder, on --backend at --precision;
file audio) spins in this process on the executor `ros2 run` uses. A prober in a separate
process, like a planner would be, publishes one image at a time and waits for its function mask (no queueing),
timing publish -> receipt. The same image and sound are first timed through the predictor alone (pre- and
post-processing included) and through the bare model forward.

Overhead = median over frames of (round trip - the node's own predictor.predict time for that same frame, found
by its stamp): DDS transport both ways, image conversion, mask and polygon building, publishing, thread hand-offs.
Pairing per frame lets the run-to-run noise of a shared machine cancel out of the difference.

Both processes use FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA unless it is already set: with Fast DDS's defaults a
640x480 bgr8 image (900 KiB) is mostly lost over best effort between processes (README, "Large raw images").
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
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
from rclpy.time import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from avag_core import AffordancePredictor, build_model
from avag_core.checkpoints.weights import save_checkpoint
from avag_ros.messages.images import rgb_to_image
from avag_ros.runtime.executors import create_executor
from avag_ros.grounding_node import GroundingNode
from timing import median_ms


def stamp_ns(header: Header) -> int:
    return Time.from_msg(header.stamp).nanoseconds


class Prober(Node):
    def __init__(self) -> None:
        super().__init__("latency_prober")
        self.publisher = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.create_subscription(Image, "affordance/function_mask", self._on_mask, 10)
        self.executor_ = SingleThreadedExecutor()
        self.executor_.add_node(self)
        self.expected: int | None = None
        self.arrived = False

    def _on_mask(self, msg: Image) -> None:
        if stamp_ns(msg.header) == self.expected:
            self.arrived = True

    def round_trip(self, image: np.ndarray, timeout: float) -> tuple[int, float | None]:
        """(stamp, publish -> mask receipt in ms, or None on timeout)."""
        header = Header(frame_id="camera", stamp=self.get_clock().now().to_msg())
        msg = rgb_to_image(image, "bgr8", header)
        self.expected, self.arrived = stamp_ns(header), False
        start = time.perf_counter()
        self.publisher.publish(msg)
        while not self.arrived:  # spinning here wakes as soon as the mask arrives
            if time.perf_counter() - start > timeout:
                return self.expected, None
            self.executor_.spin_once(timeout_sec=0.05)
        return self.expected, (time.perf_counter() - start) * 1000


def probe(domain_id: int, image: np.ndarray, frames: int, results) -> None:
    """The prober process: wait for the first answer (discovery, warm-up), then time `frames` round trips."""
    rclpy.init(domain_id=domain_id)
    prober = Prober()
    try:
        deadline = time.monotonic() + 120
        while prober.round_trip(image, timeout=5.0)[1] is None:
            if time.monotonic() > deadline:
                results.put([])
                return
        results.put([prober.round_trip(image, timeout=30.0) for _ in range(frames)])
    finally:
        rclpy.shutdown()


def measure(args: argparse.Namespace, work: Path) -> None:
    torch.manual_seed(0)
    checkpoint = args.checkpoint or work / "model.pt"
    if args.checkpoint is None:
        save_checkpoint(checkpoint, build_model(args.model))
    tone = work / "tone.wav"
    t = np.arange(3 * 16000) / 16000
    soundfile.write(tone, (0.3 * np.sin(2 * np.pi * 660 * t)).astype(np.float32), 16000)
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)

    predictor = AffordancePredictor.from_checkpoint(checkpoint, "cpu", args.precision, backend=args.backend)
    audio = (0.3 * np.sin(2 * np.pi * 660 * t[:32000])).astype(np.float32)
    predict_ms = median_ms(lambda: predictor.predict(image, audio, 16000), 10)
    pixels = predictor.prepare_image(image)
    windows = predictor.prepare_audio(audio, 16000)
    with torch.inference_mode():
        parts = predictor.backend
        forward_ms = median_ms(lambda: parts.decode(parts.encode_image(pixels), parts.embed_audio(windows)[None]), 10)
    del predictor, parts

    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")  # read by rclpy.init, inherited by the prober
    domain_id = random.randint(60, 100)  # ids above 101 can collide with ephemeral ports
    rclpy.init(domain_id=domain_id)
    node = GroundingNode(parameter_overrides=[
        Parameter("checkpoint", value=str(checkpoint)), Parameter("audio.source", value="file"),
        Parameter("audio.file", value=str(tone)), Parameter("max_rate_hz", value=0.0),
        Parameter("device", value="cpu"), Parameter("backend", value=args.backend),
        Parameter("precision", value=args.precision)])
    # The node's predict time per frame, keyed by the frame's stamp (the worker thread handles one at a time).
    predict_ms_by_stamp: dict[int, float] = {}
    loop = node._loop  # built at configure, which autostart has run
    loop_process, node_predict = loop._process, node.predictor.predict
    current_stamp = [0]

    def process_noting_stamp(msg, depth_pin):
        current_stamp[0] = stamp_ns(msg.header)
        loop_process(msg, depth_pin)

    def timed_predict(*predict_args):
        start = time.perf_counter()
        result = node_predict(*predict_args)
        predict_ms_by_stamp[current_stamp[0]] = (time.perf_counter() - start) * 1000
        return result

    loop._process, node.predictor.predict = process_noting_stamp, timed_predict
    executor = create_executor()  # as `ros2 run` spins it
    executor.add_node(node)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)])
    spinner.start()
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no rclpy or torch state inherited
    results = spawn.Queue()
    prober = spawn.Process(target=probe, args=(domain_id, image, args.frames, results))
    try:
        prober.start()
        trips = results.get(timeout=120 + 60 * args.frames)
        prober.join()
    finally:
        stop.set()
        spinner.join()
        node.trigger_deactivate()
        rclpy.shutdown()
    pairs = [(trip, predict_ms_by_stamp[stamp]) for stamp, trip in trips
             if trip is not None and stamp in predict_ms_by_stamp]
    if not pairs:
        raise SystemExit("the node never answered the prober")
    trips_ms = np.array([trip for trip, _ in pairs])
    overhead_ms = np.array([trip - predict for trip, predict in pairs])
    model = args.checkpoint or f"{args.model} (random weights)"
    print(f"{model} on {args.backend} {args.precision}, {args.width}x{args.height} bgr8 over DDS loopback (Fast DDS "
          f"{os.environ['FASTDDS_BUILTIN_TRANSPORTS']}), prober in its own process, {len(pairs)} of {args.frames} "
          f"frames paired, cpu x{torch.get_num_threads()}")
    print("| measure | median ms | p95 ms |")
    print("|---|---|---|")
    print(f"| model (image encoder, audio encoder on every window, head) | {forward_ms:.1f} | |")
    print(f"| predictor.predict (resize, audio front-end, forward, masks) | {predict_ms:.1f} | |")
    print(f"| publish -> mask received | {np.median(trips_ms):.1f} | {np.percentile(trips_ms, 95):.1f} |")
    print(f"| predict inside the node | {np.median([predict for _, predict in pairs]):.1f} | |")
    print(f"| node overhead beyond its predict (per frame) | {np.median(overhead_ms):.1f} "
          f"| {np.percentile(overhead_ms, 95):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="avagformer_b0")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--checkpoint", type=Path, help="a .pt or an export folder (default: random --model)")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avag_latency_") as work:  # a random model's checkpoint is ~316 MB
        measure(args, Path(work))


if __name__ == "__main__":
    main()
