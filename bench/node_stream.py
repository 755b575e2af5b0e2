"""The node's own work per frame: a still 640x480 view at 10 Hz through the grounding node in its own process, the
masks it publishes per second, and where the inference thread's time goes.

    python bench/node_stream.py [--model avagformer_b5] [--image-size 512] [--row openvino:cpu:bf16]
        [--reuse on off] [--max-rate-hz 5] [--seconds 60] [--rounds 2] [--repo DIR ...] [--profile] [--work DIR]

- The node: `python -m avag_ros.grounding_node` as `ros2 run` starts it, with random seed-0 weights of --model at
  --image-size saved as a checkpoint (exported once into --work's cache for the exported backends), the file audio
  source looping a steady 660 Hz tone (one sound event that never ends, the clip moving once per 0.96 s window),
  --max-rate-hz (the parameter's default: 5) and reuse.max_change at its default (on) or 0 (off).
  Each --repo runs the node from that checkout (PYTHONPATH), so that two versions are timed in one session.
- The camera and the consumer: this process, publishing 12 noisy exposures (sigma 2) of the synthetic table scene
  in a loop, bgr8 at 10 Hz, and subscribing to affordance/function_mask and affordance/overlay, as RViz would.
  Fast DDS's LARGE_DATA transport on both sides (a 640x480 bgr8 image is 900 KiB).
- A run waits for the first mask (model load, export), then 15 s more (the first keyframe, warm caches), then counts
  the masks received over --seconds; runs go in --rounds turns, each version and setting once per turn.
- CPU: each of the node's threads' user + system seconds over the window, from /proc, named by py-spy's dump (Python
  3.11 gives its threads no OS names): the inference thread, the keyframe renewal's, and the others together
  (OpenVINO's workers, which compute for both, DDS's, the executor's, the file audio's).
- --profile adds a run per checkout (reuse on) under py-spy (`pip install py-spy`; on PATH or beside this Python),
  sampling the node at 200 Hz over the window, idle samples included, and prints the inference thread's time per
  step of the frame path, in ms per mask and as a share of its wall time.
Load and the machine are printed first: on a shared machine compare only the rows of one run.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import rclpy
import soundfile
import torch
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from avag_core import build_model
from avag_core.checkpoints.weights import save_checkpoint
from reuse import exposure, fastest_cpu_row, table_scene

REPO = Path(__file__).resolve().parents[1]
CAMERA_HZ = 10.0
WARM_S = 15.0
TONE_HZ, TONE_S, TONE_AMPLITUDE, SAMPLE_RATE = 660.0, 3.0, 0.3, 16000  # a whole number of periods: a seamless loop

# The inference thread's steps, by the function a sample is in (outermost first): what each frame goes through.
# Names of both layouts (the flat one before the folders, and the folders'), so that two versions compare.
STEPS = (
    ("waiting for a frame", ("_next_frame",)),
    ("~/ground requests", ("_serve_requests",)),
    ("frame -> RGB", ("frame_to_rgb", "image_to_rgb", "compressed_to_rgb")),
    ("sound: level, events, clip", ("sound_events.py",)),
    ("predict: reuse decision", ("view_fingerprint", "view_change")),
    ("predict: image side (own or waiting for a renewal)", ("maps_for", "encode_image", "image_maps")),
    ("predict: audio front end and encoder", ("prepare_audio", "embed (")),
    ("predict: head", ("_decode",)),
    ("predict: masks at the frame's size", ("_to_prediction",)),
    ("outputs: mask images", ("mask_to_image",)),
    ("outputs: region polygon", ("largest_region_polygon",)),
    ("outputs: overlay", ("overlay", "rgb_to_bgr8")),
    ("outputs: grounding message", ("grounding_message",)),
    ("outputs: DDS publish", ("publisher.py",)),
)


def node_command(checkpoint: Path, tone: Path, backend: str, device: str, precision: str, reuse: bool,
                 max_rate_hz: float) -> list[str]:
    parameters = {"checkpoint": checkpoint, "backend": backend, "device": device, "precision": precision,
                  "audio.source": "file", "audio.file": tone, "max_rate_hz": max_rate_hz,
                  **({} if reuse else {"reuse.max_change": 0.0})}
    arguments = [item for name, value in parameters.items() for item in ("-p", f"{name}:={value}")]
    return [sys.executable, "-m", "avag_ros.grounding_node", "--ros-args", *arguments]


def python_thread_names(pid: int) -> dict[int, str]:
    """Native thread id -> Python thread name, from py-spy's dump (Python 3.11 gives its threads no OS names); empty
    without py-spy."""
    try:
        dump = subprocess.run([py_spy(), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
    except SystemExit:
        return {}
    names = {}
    for line in dump.stdout.splitlines():
        if line.startswith("Thread ") and '"' in line:
            names[int(line.split()[1], 0)] = line.split('"')[1]
    return names


def thread_cpu_s(pid: int) -> dict[int, tuple[str, float]]:
    """Native thread id -> (the OS's name for it, user + system seconds so far), for each of the process's threads."""
    ticks = os.sysconf("SC_CLK_TCK")
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # a thread that ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        threads[int(task.name)] = (stat[stat.index("(") + 1:stat.rindex(")")],
                                   (int(fields[11]) + int(fields[12])) / ticks)  # utime, stime
    return threads


def cpu_by_name(before: dict, after: dict, names: dict[int, str]) -> dict[str, float]:
    """CPU seconds between two thread_cpu_s, summed by thread name: the Python name where `names` has it, else the
    OS's (OpenVINO's and the middleware's threads)."""
    seconds: dict[str, float] = defaultdict(float)
    for tid, (comm, spent) in after.items():
        seconds[names.get(tid, comm)] += spent - before.get(tid, (comm, 0.0))[1]
    return seconds


class Camera(Node):
    """Publishes the still view at CAMERA_HZ and counts the masks that come back."""

    def __init__(self, frames: list[np.ndarray], context) -> None:
        super().__init__("still_camera", context=context)
        self._frames, self._sent = frames, 0
        self._publisher = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.masks: list[float] = []  # arrival times, monotonic
        self.create_subscription(Image, "affordance/function_mask", lambda _: self.masks.append(time.monotonic()),
                                 10)
        self.create_subscription(Image, "affordance/overlay", lambda _: None, 10)
        self.create_timer(1.0 / CAMERA_HZ, self._publish)

    def _publish(self) -> None:
        frame = self._frames[self._sent % len(self._frames)]
        msg = Image(header=Header(frame_id="camera", stamp=self.get_clock().now().to_msg()), height=frame.shape[0],
                    width=frame.shape[1], encoding="bgr8", step=frame.shape[1] * 3, data=frame.tobytes())
        self._publisher.publish(msg)
        self._sent += 1


def run(command: list[str], env: dict, frames: list[np.ndarray], seconds: float,
        profile_to: Path | None) -> dict:
    """One node process fed by the camera: masks/s over the window, per-thread CPU, and a py-spy file if asked."""
    domain = random.randint(60, 100)  # ids above 101 can collide with ephemeral ports
    env = {**env, "ROS_DOMAIN_ID": str(domain)}
    log = tempfile.TemporaryFile(mode="w+")  # not a pipe: a node that logs much would block on a full one
    node = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    try:
        executor = SingleThreadedExecutor(context=context)
        camera = Camera(frames, context)
        executor.add_node(camera)
        stop = threading.Event()
        spinner = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.05)
                                                   for _ in iter(stop.is_set, True)], daemon=True)
        spinner.start()
        deadline = time.monotonic() + 900  # a b5 export into an empty cache takes minutes
        while not camera.masks:
            if node.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                why = log.read()[-3000:] if node.poll() is not None else "no mask within 900 s"
                raise SystemExit(f"the node gave no mask: {why}")
            time.sleep(0.2)
        time.sleep(WARM_S)
        spy = None
        if profile_to is not None:
            spy = subprocess.Popen([py_spy(), "record", "--pid", str(node.pid), "--rate", "200", "--duration",
                                    str(int(seconds)), "--idle", "--threads", "--format", "raw", "--output",
                                    str(profile_to), "--nonblocking"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        cpu_before, start, received_before = thread_cpu_s(node.pid), time.monotonic(), len(camera.masks)
        time.sleep(seconds)
        cpu_after, window, received = thread_cpu_s(node.pid), time.monotonic() - start, len(camera.masks)
        if spy is not None:
            spy.wait(timeout=120)
        cpu = cpu_by_name(cpu_before, cpu_after, python_thread_names(node.pid))
        stop.set()
        spinner.join()
    finally:
        node.send_signal(2)
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
        rclpy.shutdown(context=context)
    return {"masks_per_s": (received - received_before) / window, "cpu": cpu, "window_s": window}


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).is_file():
        raise SystemExit("--profile needs py-spy (pip install py-spy) on PATH or beside this Python")
    return found


def steps_per_frame(raw: Path, masks: int) -> list[tuple[str, float, float]]:
    """(step, ms per mask, share of the inference thread's samples) from py-spy's raw output: each line a stack,
    outermost frame first, and its sample count; the inference thread's stacks are those through `run` of the
    inference loop."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "inference_loop.py" not in stack:
            continue
        frames = stack.split(";")
        step = next((name for name, marks in STEPS for frame in frames for mark in marks if mark in frame), None)
        counts[step or "other (the loop, stats, logging)"] += int(count)
    total = sum(counts.values())
    rate_hz = 200.0
    return [(name, counts[name] / rate_hz * 1000 / max(masks, 1), counts[name] / total)
            for name in [name for name, _ in STEPS] + ["other (the loop, stats, logging)"] if counts[name]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="avagformer_b5")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--row", default=fastest_cpu_row(), help="BACKEND:DEVICE:PRECISION")
    parser.add_argument("--reuse", nargs="+", default=["on", "off"], choices=["on", "off"])
    parser.add_argument("--max-rate-hz", type=float, nargs="+", default=[5.0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repo", type=Path, nargs="+", default=[REPO], help="checkouts whose node to run")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--work", type=Path, help="keeps the checkpoint and its exports between calls")
    args = parser.parse_args()
    backend, device, precision = args.row.split(":")
    work = args.work or Path(tempfile.mkdtemp(prefix="avag_node_stream_"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = work / f"{args.model}_{args.image_size}.pt"
    if not checkpoint.exists():
        torch.manual_seed(0)
        save_checkpoint(checkpoint, build_model(args.model, image_size=args.image_size))
    tone = work / "tone.wav"
    t = np.arange(int(TONE_S * SAMPLE_RATE)) / SAMPLE_RATE
    soundfile.write(tone, (TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32), SAMPLE_RATE)
    view, _ = table_scene()
    rng = np.random.default_rng(0)
    frames = [np.ascontiguousarray(exposure(view, rng)[..., ::-1]) for _ in range(12)]  # bgr8
    env = {**os.environ, "FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA", "AVAG_ROS_CACHE_DIR": str(work / "cache")}
    os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = "LARGE_DATA"  # this process's side, read by rclpy.init
    print(f"{args.model} at {args.image_size} px, random weights, {args.row}; a still 640x480 bgr8 view at "
          f"{CAMERA_HZ:g} Hz; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the start")
    settings = [(repo, reuse, rate) for rate in args.max_rate_hz for reuse in args.reuse for repo in args.repo]
    results: dict[tuple, list[dict]] = defaultdict(list)
    for round_index in range(args.rounds):
        for repo, reuse, rate in settings:
            command = node_command(checkpoint, tone, backend, device, precision, reuse == "on", rate)
            result = run(command, {**env, "PYTHONPATH": str(repo)}, frames, args.seconds, None)
            results[(repo, reuse, rate)].append(result)
            print(f"  round {round_index + 1}, {repo}, reuse {reuse}, max_rate_hz {rate:g}: "
                  f"{result['masks_per_s']:.2f} masks/s (load {os.getloadavg()[0]:.2f})", flush=True)
    print("\n| node from | reuse | max_rate_hz | masks/s, each round | inference thread CPU s/s | keyframe renewal "
          "CPU s/s | other threads CPU s/s |")
    print("|---|---|---|---|---|---|---|")
    for (repo, reuse, rate), runs in results.items():
        def share(select) -> float:
            return float(np.mean([sum(v for k, v in r["cpu"].items() if select(k)) / r["window_s"] for r in runs]))
        rates = ", ".join(f"{r['masks_per_s']:.2f}" for r in runs)
        if not all("affordance_inference" in r["cpu"] for r in runs):  # no py-spy: no thread names
            print(f"| {repo} | {reuse} | {rate:g} | {rates} | n/a | n/a | {share(lambda name: True):.2f} (all) |")
            continue
        inference = share(lambda name: name == "affordance_inference")
        renewal = share(lambda name: name.startswith("keyframe-renewal"))
        others = share(lambda name: name != "affordance_inference" and not name.startswith("keyframe-renewal"))
        print(f"| {repo} | {reuse} | {rate:g} | {rates} | {inference:.2f} | {renewal:.2f} | {others:.2f} |")
    if args.profile:
        for repo in args.repo:
            raw = work / f"profile_{repo.name or 'repo'}.txt"
            command = node_command(checkpoint, tone, backend, device, precision, True, args.max_rate_hz[0])
            result = run(command, {**env, "PYTHONPATH": str(repo)}, frames, args.seconds, raw)
            masks = round(result["masks_per_s"] * result["window_s"])
            print(f"\nthe inference thread's time per mask, {repo}, reuse on, max_rate_hz {args.max_rate_hz[0]:g} "
                  f"(under py-spy: {result['masks_per_s']:.2f} masks/s, load {os.getloadavg()[0]:.2f}):")
            print("| step | ms per mask | share of the thread's time |")
            print("|---|---|---|")
            for name, ms, part in steps_per_frame(raw, masks):
                print(f"| {name} | {ms:.1f} | {100 * part:.1f} % |")


if __name__ == "__main__":
    main()
