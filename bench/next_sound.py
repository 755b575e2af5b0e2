"""~/ground_next_sound: the time from a sound's onset to the action's result, as a planner waits for it.

    python bench/next_sound.py [--goals 10] [--checkpoint CKPT] [--min-heard-s 0] [--wait-for-end]

The grounding node (in this process, over DDS) with the demo's weights and scene streamed as a 10 Hz camera, its
file source looping the mug's sound for 1.5 s and then 3 s of quiet. Each goal is sent 0.5 s into the quiet; its
sound begins 2.5 s later. Per goal: when its result arrived after the sound's true onset (dated by the node's ring
buffer, which stamps the samples as they are played), whether the masks show the mug (IoU >= 0.5), and the
event_onset the result reports against the true onset. Prints each and the median.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
import soundfile
import torch
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avag_core.data.synthetic import CATEGORIES, SAMPLE_RATE, synthesize_sound  # noqa: E402
from avag_core.training.metrics import sample_iou  # noqa: E402
from avag_interfaces.action import GroundNextSound  # noqa: E402
from avag_ros.messages.images import image_to_rgb, rgb_to_image  # noqa: E402
from avag_ros.data import DEMO_CHECKPOINT  # noqa: E402
from avag_ros.tools.demo import QUIET_RMS, demo_scene  # noqa: E402
from avag_ros.runtime.executors import create_executor  # noqa: E402
from avag_ros.grounding_node import GroundingNode  # noqa: E402

SOUND_S, QUIET_S, SEND_AT_S = 1.5, 3.0, 0.5


def until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--goals", type=int, default=10)
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT)
    parser.add_argument("--min-heard-s", type=float, default=0.0)
    parser.add_argument("--wait-for-end", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("/tmp/next_sound_bench"))
    args = parser.parse_args()
    rng = np.random.default_rng(3)
    scene, _ = demo_scene(rng)
    mug = next(c for c in CATEGORIES if c.object == "mug")
    args.out.mkdir(parents=True, exist_ok=True)
    clip_path = args.out / "mug_then_quiet.wav"
    soundfile.write(clip_path, np.concatenate([synthesize_sound(rng, mug.sound, SOUND_S), rng.normal(
        0.0, QUIET_RMS, int(QUIET_S * SAMPLE_RATE)).astype(np.float32)]), SAMPLE_RATE, subtype="PCM_16")
    truth = torch.from_numpy(next(m for c, m in zip(scene.categories, scene.function_masks)
                                  if c.object == "mug")).float()
    loop = int(SOUND_S * SAMPLE_RATE) + int(QUIET_S * SAMPLE_RATE)

    rclpy.init()
    node = GroundingNode(parameter_overrides=[Parameter("checkpoint", value=str(args.checkpoint)),
                                              Parameter("audio.source", value="file"),
                                              Parameter("audio.file", value=str(clip_path)),
                                              Parameter("max_rate_hz", value=0.0)])
    planner = Node("planner")
    camera = planner.create_publisher(Image, "image", qos_profile_sensor_data)
    executor, planner_executor = create_executor(), SingleThreadedExecutor()
    executor.add_node(node)
    planner_executor.add_node(planner)
    client = ActionClient(planner, GroundNextSound, "/affordance_grounding/ground_next_sound")
    stop = threading.Event()
    threads = [threading.Thread(target=lambda e=e: [e.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)],
                                daemon=True) for e in (executor, planner_executor)]
    def stream() -> None:
        while not stop.wait(0.1):
            camera.publish(rgb_to_image(scene.image, "rgb8", Header(stamp=planner.get_clock().now().to_msg(),
                                                                   frame_id="camera")))

    threads.append(threading.Thread(target=stream, daemon=True))
    for thread in threads:
        thread.start()
    buffer = node.audio_source.buffer
    rows = []
    try:
        assert client.wait_for_server(timeout_sec=30)
        for _ in range(args.goals):
            position = lambda: buffer.written % loop  # noqa: E731
            until(lambda: int((SOUND_S + SEND_AT_S) * SAMPLE_RATE) <= position()
                  < int((SOUND_S + SEND_AT_S + 0.2) * SAMPLE_RATE), 30)
            onset_sample = buffer.written - position() + loop  # the next loop's first sample
            sent = client.send_goal_async(GroundNextSound.Goal(min_heard_s=args.min_heard_s,
                                                               wait_for_end=args.wait_for_end))
            until(sent.done, 10)
            result_future = sent.result().get_result_async()
            until(result_future.done, 30)
            arrived_ns = node.get_clock().now().nanoseconds
            result = result_future.result().result
            onset_ns = buffer.stamp_of(onset_sample)
            grounding = result.grounding
            iou = sample_iou(torch.from_numpy(image_to_rgb(grounding.function_mask)[..., 0] > 127).float(), truth)
            reported = grounding.event_onset.sec * 10**9 + grounding.event_onset.nanosec
            rows.append(((arrived_ns - onset_ns) / 1e6, iou, (reported - onset_ns) / 1e6, result.success))
            print(f"goal {len(rows)}: result {rows[-1][0]:.0f} ms after the onset; mug IoU {iou:.2f}; event_onset "
                  f"{rows[-1][2]:+.0f} ms from the true onset; {result.message}", flush=True)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        node.trigger_deactivate()
        client.destroy()
        for each in (node, planner):
            each.destroy_node()
        rclpy.try_shutdown()
    latencies = np.array([r[0] for r in rows])
    print(f"\nonset to result: median {np.median(latencies):.0f} ms (min {latencies.min():.0f}, max "
          f"{latencies.max():.0f}) over {len(rows)} goals; right (IoU >= 0.5): {sum(r[1] >= 0.5 for r in rows)}; "
          f"event_onset from the true onset: median {np.median([r[2] for r in rows]):+.0f} ms")


if __name__ == "__main__":
    main()
