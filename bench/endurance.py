"""Endurance and bad input: the grounding node as its own process, fed for minutes from another one.

    python bench/endurance.py [--minutes 10] [--malformed 2000] [--cycles 20] [--checkpoint CKPT] [--json FILE]

Two node processes run side by side (b0, CPU, `file` audio source): `raw` subscribes to sensor_msgs/Image,
`compressed` to CompressedImage. This process streams 640x480 images to both at 15 Hz (bgr8 to one, JPEG to the
other), samples each node's RSS every 10 s, and interleaves `--malformed` bad messages from a seeded generator:
unknown and mismatched encodings, step too small or huge, data shorter or longer than declared, width or height
0, 1x1, 8000x8000 declared with little data, corrupt and truncated JPEG and PNG. The clip the nodes play loops
a synthetic sound, silence and full-scale clipping. Every 10 s it changes `threshold`, `max_rate_hz` and
`publish_when_silent` on both nodes; in the last part of the run it cycles the raw node's lifecycle `--cycles`
times (deactivate/activate, then cleanup/configure/activate) and waits for masks to come back each time.

Both nodes subscribe reliably here (a QoS override), so that every bad message sent is one the node saw and
`frames_rejected` can be compared with it exactly; both sides use FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA. Bad
messages pause while the lifecycle cycles and then resume at their usual rate; those the pause displaced are not
sent. Each deactivate/activate cycle sends one raw bad message while the node is inactive, which it must count too
(its `frames_ignored_inactive` counts the good frames of that time); none while it is unconfigured, since it has no
subscription then. At the end the bench waits up to SETTLE_S for the nodes' counts to reach what it sent: on a busy
machine the node, or this process's executor, may be behind on its last messages. A catch-up burst of hundreds of
900 KiB frames into a reliable depth-20 subscription grows Fast DDS's history pools for good (measured: +33 MB in
one burst, none over the 20 cycles themselves), which is the middleware's high-water mark, not the node's; spreading
the rest over the time left was still a burst in a 2-minute run (3 to 7 times the usual rate in its last 7 to 15 s,
and the raw node's last RSS sample 16 to 24 MB above the one before).
Prints a summary and writes it as JSON with --json. Exit code 1 if a goal is missed: both nodes exit 0 within
5 s of SIGINT, every lifecycle cycle resumes, no inference error or ERROR line, every malformed message counted,
RSS growth after the warm-up at most 20 MB per node.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import rclpy
import soundfile
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rcl_interfaces.srv import SetParameters
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from avag_core.data.synthetic import CATEGORIES, SAMPLE_RATE, render_scene, synthesize_sound
from avag_ros.data import DEMO_CHECKPOINT
from avag_ros.messages.images import rgb_to_image

NODES = ("raw", "compressed")
RATE_HZ = 15.0
RSS_PERIOD_S = 10.0
PARAMETER_PERIOD_S = 10.0
RESUME_TIMEOUT_S = 30.0
EXIT_WITHIN_S = 5.0  # after SIGINT, as `ros2 launch` allows before it escalates
SETTLE_S = 10.0  # the longest wait at the end for the nodes' counts of the malformed messages sent


def write_clip(path: Path) -> None:
    """4 s of a synthetic hammer, 1 s of silence, 1 s of full-scale clipping: what a real microphone gives."""
    rng = np.random.default_rng(0)
    sound = synthesize_sound(rng, CATEGORIES[0].sound, 4.0)
    clipped = np.clip(4 * np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE), -1, 1)
    clip = np.concatenate([sound, np.zeros(SAMPLE_RATE), clipped * 32767 / 32768]).astype(np.float32)
    soundfile.write(path, clip, SAMPLE_RATE, subtype="PCM_16")


def malformed_messages(rng: np.random.Generator, good: Image, jpeg: bytes, png: bytes) -> list[Image | CompressedImage]:
    """One of each kind, in random order: raw images (for `raw`) and compressed ones (for `compressed`)."""
    def raw(**fields) -> Image:
        msg = Image(header=good.header, height=good.height, width=good.width, encoding=good.encoding,
                    is_bigendian=good.is_bigendian, step=good.step, data=good.data)
        for key, value in fields.items():
            setattr(msg, key, value)
        return msg

    data = bytes(good.data)
    encoding = ["bayer_rggb8", "16UC3", "", "jpeg", "BGR8x"][rng.integers(5)]
    kinds = [
        raw(encoding=encoding),  # unknown
        raw(encoding="rgba8"),  # known, but 3 bytes per pixel of data for 4
        raw(step=int(rng.integers(1, good.width * 3))),  # step too small
        raw(step=int(rng.integers(10**6, 10**8))),  # step huge
        raw(data=data[:int(rng.integers(0, len(data)))]),  # shorter than declared
        raw(data=data + bytes(int(rng.integers(1, 5000)))),  # longer than declared
        raw(width=0), raw(height=0), raw(width=1, height=1, step=3),  # 1x1 with a whole frame of data
        raw(width=8000, height=8000, step=24000),  # huge, declared with 900 KiB of data
        CompressedImage(header=good.header, format="jpeg", data=rng.integers(0, 256, 2000, np.uint8).tobytes()),
        CompressedImage(header=good.header, format="jpeg", data=jpeg[:int(rng.integers(10, len(jpeg) - 10))]),
        CompressedImage(header=good.header, format="png", data=png[:int(rng.integers(10, len(png) - 20))]),
        CompressedImage(header=good.header, format="jpeg", data=b""),
    ]
    return [kinds[i] for i in rng.permutation(len(kinds))]


class Driver(Node):
    """The camera, the prober and the operator: publishes, listens, sets parameters, drives the lifecycle."""

    def __init__(self) -> None:
        super().__init__("endurance_driver")
        reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        self.raw_images = self.create_publisher(Image, "raw/image", reliable)
        self.compressed_images = self.create_publisher(CompressedImage, "compressed/image/compressed", reliable)
        self.lock = threading.Lock()
        self.masks = {name: 0 for name in NODES}
        self.latencies_ms: list[float] = []
        self.diagnostics: dict[str, dict[str, str]] = {}
        for name in NODES:
            self.create_subscription(Image, f"{name}/affordance/function_mask",
                                     lambda msg, n=name: self._on_mask(n, msg), 50)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.change_state = self.create_client(ChangeState, "raw/affordance_grounding/change_state")
        self.set_parameters = {name: self.create_client(SetParameters, f"{name}/affordance_grounding/set_parameters")
                               for name in NODES}

    def _on_mask(self, name: str, msg: Image) -> None:
        latency = (self.get_clock().now() - rclpy.time.Time.from_msg(msg.header.stamp)).nanoseconds / 1e6
        with self.lock:
            self.masks[name] += 1
            self.latencies_ms.append(latency)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            name = "compressed" if values.get("image_topic", "").startswith("/compressed") else "raw"
            with self.lock:
                self.diagnostics[name] = values

    def mask_count(self, name: str) -> int:
        with self.lock:
            return self.masks[name]

    def counter(self, name: str, key: str) -> int:
        with self.lock:
            return int(self.diagnostics.get(name, {}).get(key, -1))

    def call(self, client, request, timeout: float = 20.0):
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        return future.result() if future.done() else None


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_node(name: str, checkpoint: Path, clip: Path, env: dict, log: Path) -> subprocess.Popen:
    arguments = ["-p", f"checkpoint:={checkpoint}", "-p", "audio.source:=file", "-p", f"audio.file:={clip}",
                 "-p", "device:=cpu", "-p", "max_rate_hz:=0.0",
                 "-p", f"use_compressed:={'true' if name == 'compressed' else 'false'}",
                 "-p", f"qos_overrides./{name}/image{'/compressed' if name == 'compressed' else ''}"
                       ".subscription.reliability:=reliable",
                 "-p", f"qos_overrides./{name}/image{'/compressed' if name == 'compressed' else ''}"
                       ".subscription.depth:=20"]
    return subprocess.Popen([sys.executable, "-m", "avag_ros.grounding_node", "--ros-args", "-r", f"__ns:=/{name}",
                             *arguments], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def cycle_lifecycle(driver: Driver, cycle: int, while_inactive: Callable[[], None]) -> float | None:
    """One deactivate/activate (even cycles), calling `while_inactive` in between, or deactivate/cleanup/configure/
    activate (odd); seconds until the next mask, or None if none came."""
    steps = [Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_ACTIVATE]
    if cycle % 2:
        steps = [Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP, Transition.TRANSITION_CONFIGURE,
                 Transition.TRANSITION_ACTIVATE]
    for transition in steps:
        if transition == Transition.TRANSITION_ACTIVATE and len(steps) == 2:
            while_inactive()
        request = ChangeState.Request()
        request.transition.id = transition
        response = driver.call(driver.change_state, request)
        if response is None or not response.success:
            return None
    before, started = driver.mask_count("raw"), time.monotonic()
    while time.monotonic() - started < RESUME_TIMEOUT_S:
        if driver.mask_count("raw") > before:
            return time.monotonic() - started
        time.sleep(0.02)
    return None


class Camera:
    """15 Hz of good frames to both nodes from its own thread, plus `publish_now` for a frame right after a bad
    message; tracks whether a mask follows within a second, for those and for every 15th regular frame."""

    def __init__(self, driver: Driver, frame: np.ndarray, jpeg: bytes) -> None:
        self.driver, self.frame, self.jpeg = driver, frame, jpeg
        self.sent = 0
        self.watch: list[tuple[str, str, float, int]] = []  # (kind, node, time, masks then)
        self.followed = {kind: {name: [0, 0] for name in NODES} for kind in ("after_bad", "control")}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def publish_now(self, kind: str | None = None) -> None:
        header = Header(stamp=self.driver.get_clock().now().to_msg(), frame_id="camera")
        with self.lock:
            self.driver.raw_images.publish(rgb_to_image(self.frame, "bgr8", header))
            self.driver.compressed_images.publish(CompressedImage(header=header, format="jpeg", data=self.jpeg))
            self.sent += 1
            if kind is not None:
                self.watch += [(kind, name, time.monotonic(), self.driver.mask_count(name)) for name in NODES]
            while self.watch and time.monotonic() - self.watch[0][2] > 1.0:
                seen, name, _, masks_then = self.watch.pop(0)
                self.followed[seen][name][0] += 1
                self.followed[seen][name][1] += self.driver.mask_count(name) > masks_then

    def _run(self) -> None:
        next_frame = time.monotonic()
        while not self.stop.wait(max(0.0, next_frame - time.monotonic())):
            self.publish_now("control" if self.sent % 15 == 0 else None)
            next_frame += 1 / RATE_HZ

    def fraction(self, kind: str, name: str) -> float:
        sent, followed = self.followed[kind][name]
        return followed / max(sent, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--malformed", type=int, default=2000, help="bad messages to send, spread over the run")
    parser.add_argument("--cycles", type=int, default=20, help="lifecycle cycles of the raw node")
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="avag_endurance_"))
    clip = work / "clip.wav"
    write_clip(clip)
    scene = render_scene(np.random.default_rng(args.seed), size=480, categories=list(CATEGORIES[:3]))
    frame = cv2.resize(scene.image, (640, 480))
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()
    png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()
    domain = 90 + os.getpid() % 10
    os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = "LARGE_DATA"  # this process and the nodes alike
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain)}
    processes = {name: start_node(name, args.checkpoint, clip, env, work / f"{name}.log") for name in NODES}

    rclpy.init(domain_id=domain)
    driver = Driver()
    executor = SingleThreadedExecutor()
    executor.add_node(driver)

    def spin() -> None:
        try:
            while rclpy.ok():
                executor.spin_once(timeout_sec=0.05)
        except ExternalShutdownException:  # the context went down between the check and the wait
            pass

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    camera = Camera(driver, frame, jpeg)
    duration = 60 * args.minutes
    bad_sent = {name: 0 for name in NODES}
    rss = {name: [] for name in NODES}
    resumes: list[float | None] = []
    parameter_changes = 0
    try:
        print(f"waiting for both nodes (logs in {work}) ...", flush=True)
        deadline = time.monotonic() + 120
        while min(driver.counter(name, "frames_rejected") for name in NODES) < 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        camera.thread.start()
        started = time.monotonic()
        next_rss = next_parameters = started
        bad_period = duration / max(args.malformed, 1)
        next_bad = started + bad_period / 2
        cycles_from = started + 0.6 * duration
        pending_bad: list[Image | CompressedImage] = []
        inactive_rng = np.random.default_rng(args.seed + 1)  # the regular sequence stays that of earlier runs

        def bad_while_inactive() -> None:
            header = Header(stamp=driver.get_clock().now().to_msg(), frame_id="camera")
            kinds = malformed_messages(inactive_rng, rgb_to_image(frame, "bgr8", header), jpeg, png)
            driver.raw_images.publish(next(m for m in kinds if isinstance(m, Image)))
            bad_sent["raw"] += 1

        while (now := time.monotonic()) < started + duration:
            for name, process in processes.items():
                if process.poll() is not None:
                    raise SystemExit(f"the {name} node died with code {process.returncode}; see {work}/{name}.log")
            if now >= next_rss:
                for name, process in processes.items():
                    rss[name].append((now - started, rss_mb(process.pid)))
                next_rss += RSS_PERIOD_S
            if now >= next_parameters:
                values = [Parameter("threshold", value=float(rng.uniform(0.3, 0.7))),
                          Parameter("max_rate_hz", value=float(rng.choice([0.0, 5.0, 10.0]))),
                          Parameter("publish_when_silent", value=bool(rng.integers(2)))]
                request = SetParameters.Request(parameters=[p.to_parameter_msg() for p in values])
                for name in NODES:
                    response = driver.call(driver.set_parameters[name], request)
                    parameter_changes += response is not None and all(r.successful for r in response.results)
                next_parameters += PARAMETER_PERIOD_S
            if len(resumes) < args.cycles and now >= cycles_from:
                resumes.append(cycle_lifecycle(driver, len(resumes), bad_while_inactive))
                continue
            if now - next_bad > 1.0:  # behind after the lifecycle cycles: resume at the usual rate, no catch-up
                next_bad = now
            if now >= next_bad and sum(bad_sent.values()) < args.malformed:
                if not pending_bad:
                    header = Header(stamp=driver.get_clock().now().to_msg(), frame_id="camera")
                    pending_bad = malformed_messages(rng, rgb_to_image(frame, "bgr8", header), jpeg, png)
                message = pending_bad.pop()
                name = "compressed" if isinstance(message, CompressedImage) else "raw"
                (driver.compressed_images if name == "compressed" else driver.raw_images).publish(message)
                bad_sent[name] += 1
                camera.publish_now("after_bad")
                next_bad += bad_period
            time.sleep(max(0.0, min(next_bad, next_rss, next_parameters) - time.monotonic()))
        time.sleep(2.5)  # the last diagnostics
        settle_until = time.monotonic() + SETTLE_S
        while (any(driver.counter(name, "frames_rejected") != bad_sent[name] for name in NODES)
               and time.monotonic() < settle_until):
            time.sleep(0.2)
        for name, process in processes.items():
            rss[name].append((time.monotonic() - started, rss_mb(process.pid)))
    finally:
        camera.stop.set()
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        codes, exit_s = {}, {}
        for name, process in processes.items():
            try:
                codes[name] = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = "killed"
            exit_s[name] = round(time.monotonic() - signalled, 2)
        rclpy.try_shutdown()
        spinner.join(timeout=5)

    latencies = np.array(driver.latencies_ms)
    warm_up_s = min(60.0, duration / 4)
    summary = {"minutes": args.minutes, "frames_sent_per_node": camera.sent, "exit_codes": codes,
               "exit_s_after_sigint": exit_s,
               "lifecycle_cycles": len(resumes), "lifecycle_resumed": sum(r is not None for r in resumes),
               "lifecycle_resume_s_max": max((r for r in resumes if r is not None), default=None),
               "parameter_changes_applied": parameter_changes,
               "latency_p50_ms": float(np.median(latencies)) if latencies.size else None,
               "latency_p95_ms": float(np.percentile(latencies, 95)) if latencies.size else None}
    for name in NODES:
        warm = next((mb for t, mb in rss[name] if t >= warm_up_s), rss[name][-1][1])
        logs = (work / f"{name}.log").read_text()
        summary[name] = {
            "masks_out": driver.mask_count(name), "frames_dropped": driver.counter(name, "frames_dropped"),
            "malformed_sent": bad_sent[name], "frames_rejected": driver.counter(name, "frames_rejected"),
            "frames_ignored_inactive": driver.counter(name, "frames_ignored_inactive"),
            "inference_errors": driver.counter(name, "inference_errors"),
            "mask_within_1s_after_bad": camera.fraction("after_bad", name),
            "mask_within_1s_control": camera.fraction("control", name),
            "rss_warm_mb": warm, "rss_end_mb": rss[name][-1][1], "rss_growth_mb": rss[name][-1][1] - warm,
            "rss_samples_mb": [round(mb, 1) for _, mb in rss[name]],
            "error_lines": sum("[ERROR]" in line for line in logs.splitlines()),
        }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    goals = [all(code == 0 for code in codes.values()), all(t <= EXIT_WITHIN_S for t in exit_s.values()),
             summary["lifecycle_resumed"] == len(resumes),
             *(summary[n]["inference_errors"] == 0 and summary[n]["error_lines"] == 0 and summary[n]["masks_out"] > 0
               and summary[n]["frames_rejected"] == summary[n]["malformed_sent"]
               and summary[n]["rss_growth_mb"] <= 20 for n in NODES)]
    print("goals met" if all(goals) else "GOALS MISSED", flush=True)
    return 0 if all(goals) else 1


if __name__ == "__main__":
    sys.exit(main())
