"""The demo: the grounding node hears two objects in turn and segments the one it hears. No GPU, camera,
microphone or download.

    python -m avag_ros.demo [--out demo_output] [--seconds 40] [--checkpoint CKPT]

1. Weights: `avag_ros/data/demo_avagformer_b0.pt`, an avagformer_b0 trained from scratch by `training/train.py`
   on the synthetic task (how, and its scores, in `avag_ros/data/demo_avagformer_b0.md`). Not AVAGD weights:
   it knows the synthetic objects only. `--checkpoint` runs yours instead.
2. A synthetic scene of three objects, and one clip in which the first object sounds for `--segment-s` seconds,
   then the second.
3. The grounding node (audio.source = file, looping that clip, as a microphone would hear it) and the sample
   player (the scene as a 10 Hz camera) run over DDS. Each function mask is scored against the object whose
   sound filled the node's whole audio window (masks from a window that spans the change are not scored), one
   overlay per sound is saved, and a summary gives frames in, masks out, latency and mIoU_f per sound.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
import soundfile
import torch
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from avag_core.data.synthetic import CATEGORIES, SAMPLE_RATE, render_scene, synthesize_sound
from avag_core.image import save_png
from avag_core.metrics import sample_iou
from avag_core.weights import load_checkpoint

from .audio_sources import FileSource
from .conversions import image_to_rgb
from .grounding_node import GroundingNode
from .sample_player import SamplePlayer

DEMO_CHECKPOINT = Path(__file__).resolve().parent / "data" / "demo_avagformer_b0.pt"
# Three seen categories of the synthetic task; the first two are heard in turn, the third only seen.
SCENE_OBJECTS = ("hammer", "mug", "lamp")
AUDIO_WINDOW_S = 2.0
# Masks whose audio window may reach back across a change of sound are not scored: the window itself plus
# the time from the window's end to the mask's arrival (inference and DDS), generously.
SETTLE_S = AUDIO_WINDOW_S + 1.5


def describe_weights(path: Path) -> str:
    payload = load_checkpoint(path)
    config = payload["config"]
    encoder = config.get("audio_encoder", "vggish")  # format-1 checkpoints predate the choice
    description = f"{path}: {config['backbone']} backbone, {config['image_size']} px, {encoder} audio"
    if "step" in payload:
        val = payload.get("val", {})
        description += (f", trained {payload['step']} steps on the synthetic task"
                        f" (synthetic val mIoU_f {val.get('mIoU_f', float('nan')):.1f}); not AVAGD weights")
    return description


class SoundSchedule:
    """Which object is sounding, read from how far the node's file source has played the clip."""

    def __init__(self, source: FileSource, segment_s: float, names: list[str]) -> None:
        self.source, self.segment_s, self.names = source, segment_s, names

    def settled_sound(self) -> str | None:
        """The object heard over the last SETTLE_S seconds, or None while that span crosses a change."""
        played_s = self.source.buffer.written / self.source.sample_rate
        position = played_s % (self.segment_s * len(self.names))
        segment = int(position // self.segment_s)
        if played_s < SETTLE_S or position - segment * self.segment_s < SETTLE_S:
            return None
        return self.names[segment]


class MaskCollector(Node):
    """Scores each function mask against the heard object's ground truth and keeps one overlay per sound."""

    def __init__(self, ground_truth: dict[str, np.ndarray], schedule: SoundSchedule, out: Path) -> None:
        super().__init__("demo_collector")
        self.ground_truth, self.schedule, self.out = ground_truth, schedule, out
        self.ious: dict[str, list[float]] = {name: [] for name in ground_truth}
        self.latencies_ms: list[float] = []
        self.overlays: dict[str, Path] = {}
        self.create_subscription(Image, "affordance/function_mask", self._on_mask, 10)
        self.create_subscription(Image, "affordance/overlay", self._on_overlay, 10)

    def _on_mask(self, msg: Image) -> None:
        stamp = rclpy.time.Time.from_msg(msg.header.stamp)
        self.latencies_ms.append((self.get_clock().now() - stamp).nanoseconds / 1e6)
        heard = self.schedule.settled_sound()
        if heard is not None:
            mask = torch.from_numpy(image_to_rgb(msg)[..., 0] > 127).float()
            self.ious[heard].append(sample_iou(mask, torch.from_numpy(self.ground_truth[heard]).float()))

    def _on_overlay(self, msg: Image) -> None:
        heard = self.schedule.settled_sound()
        if heard is not None and heard not in self.overlays:
            self.overlays[heard] = self.out / f"overlay_{heard}.png"
            save_png(self.overlays[heard], image_to_rgb(msg))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avag_ros.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--seconds", type=float, default=40.0, help="how long to stream the scene")
    parser.add_argument("--segment-s", type=float, default=10.0, help="how long each object sounds in turn")
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT, help="weights to run")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    if args.segment_s <= SETTLE_S:
        parser.error(f"--segment-s must exceed {SETTLE_S:g} s, the time a mask needs to follow a new sound")

    print(f"weights: {describe_weights(args.checkpoint)}", flush=True)
    rng = np.random.default_rng(args.seed)
    categories = [next(c for c in CATEGORIES if c.object == name) for name in SCENE_OBJECTS]
    scene = render_scene(rng, size=320, categories=categories)
    heard = categories[:2]
    args.out.mkdir(parents=True, exist_ok=True)
    clip = args.out / "sound.wav"
    soundfile.write(clip, np.concatenate([synthesize_sound(rng, c.sound, args.segment_s) for c in heard]),
                    SAMPLE_RATE)
    save_png(args.out / "scene.png", scene.image)
    ground_truth = {}
    for category, function in zip(heard, scene.function_masks):
        ground_truth[category.object] = function
        save_png(args.out / f"ground_truth_{category.object}.png", function.astype(np.uint8) * 255)
    print(f"scene: {', '.join(c.object for c in categories)}; the clip plays "
          + ", then ".join(f"{c.affordance.replace('_', ' ')} {c.object}" for c in heard)
          + f", {args.segment_s:g} s each, in a loop", flush=True)

    rclpy.init()
    grounding = GroundingNode(parameter_overrides=[
        Parameter("checkpoint", value=str(args.checkpoint)), Parameter("audio.source", value="file"),
        Parameter("audio.file", value=str(clip)), Parameter("audio.window_s", value=AUDIO_WINDOW_S),
        Parameter("max_rate_hz", value=0.0)])
    if not isinstance(grounding.audio_source, FileSource):
        print("error: the grounding node did not configure (see its log above)", file=sys.stderr)
        grounding.destroy_node()
        rclpy.try_shutdown()
        return 1
    schedule = SoundSchedule(grounding.audio_source, args.segment_s, [c.object for c in heard])
    player = SamplePlayer([scene.image], rate_hz=10.0, frame_id="camera", encoding="bgr8")
    collector = MaskCollector(ground_truth, schedule, args.out)
    executor = SingleThreadedExecutor()
    for node in (grounding, player, collector):
        executor.add_node(node)
    deadline = time.monotonic() + args.seconds
    try:
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        grounding.trigger_deactivate()
        for node in (grounding, player, collector):
            node.destroy_node()
        rclpy.try_shutdown()

    latencies = np.array(collector.latencies_ms)
    print("\nsummary")
    print(f"  frames in:  {player.published} images at 10 Hz over {args.seconds:g} s")
    print(f"  masks out:  {len(latencies)} (the node keeps only the newest image; {grounding.stats.dropped} "
          "older frames skipped)")
    if latencies.size:
        print(f"  latency:    median {np.median(latencies):.0f} ms, p95 {np.percentile(latencies, 95):.0f} ms "
              "(image stamp to mask receipt)")
    for name, ious in collector.ious.items():
        score = f"{100 * np.mean(ious):.1f}" if ious else "n/a"
        print(f"  mIoU_f while the {name} sounds: {score} over {len(ious)} masks "
              f"(ground truth: the {name}'s function part)")
    print(f"  overlays:   {', '.join(str(p) for p in collector.overlays.values()) or 'none'}")
    return 0 if latencies.size else 1


if __name__ == "__main__":
    sys.exit(main())
