"""The demo: the grounding node hears two objects in turn and segments the one it hears. No GPU, camera,
microphone or download.

    python -m avag_ros.demo [--out demo_output] [--seconds 40] [--checkpoint CKPT] [--no-reuse]

1. Weights: `avag_ros/data/demo_avagformer_b0.pt`, an avagformer_b0 trained from scratch by `training/train.py`
   on the synthetic task (how, and its scores, in `avag_ros/data/demo_avagformer_b0.md`). Not AVAGD weights:
   it knows the synthetic objects only. `--checkpoint` runs yours instead.
2. A synthetic scene of three objects on a table, seen by an RGB-D camera (avag_ros.demo_depth: the objects'
   tops at known heights, the second one tilted), and one clip in which the first object sounds for
   `--segment-s` seconds, then the second.
3. The grounding node (audio.source = file, looping that clip, as a microphone would hear it; depth.enabled) and
   the sample player (the scene as a 10 Hz camera, with its aligned depth and CameraInfo) run over DDS. Each
   function mask is scored against the object whose sound filled the node's whole audio window (masks from a
   window that spans the change are not scored), and so is each 3D target: the point's distance from the one a
   perfect mask would give, and the approach axis's angle from the object's true surface normal. One overlay per
   sound and a picture of the 3D targets over the scene are saved; the summary gives frames in, masks out,
   latency, and per sound mIoU_f and the 3D errors.
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
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image

from avag_core.checkpoints.weights import load_checkpoint
from avag_core.data.synthetic import CATEGORIES, SAMPLE_RATE, Scene, render_scene, synthesize_sound
from avag_core.image import save_png
from avag_core.training.metrics import sample_iou

from .audio_sources import FileSource
from .conversions import image_to_rgb
from .demo_depth import DepthScene, project, render_depth, true_target
from .geometry import rotation_from_quaternion
from .grounding_node import GroundingNode
from .parameters import spec
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
    """Scores each function mask and 3D target against the heard object's ground truth and keeps one overlay per
    sound."""

    def __init__(self, ground_truth: dict[str, np.ndarray], targets: dict[str, tuple[np.ndarray, np.ndarray]],
                 schedule: SoundSchedule, out: Path) -> None:
        super().__init__("demo_collector")
        self.ground_truth, self.targets, self.schedule, self.out = ground_truth, targets, schedule, out
        self.ious: dict[str, list[float]] = {name: [] for name in ground_truth}
        self.point_errors_mm: dict[str, list[float]] = {name: [] for name in ground_truth}
        self.normal_errors_deg: dict[str, list[float]] = {name: [] for name in ground_truth}
        self.points: dict[str, list[np.ndarray]] = {name: [] for name in ground_truth}
        self.last_pose: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.latencies_ms: list[float] = []
        self.overlays: dict[str, Path] = {}
        self.create_subscription(Image, "affordance/function_mask", self._on_mask, 10)
        self.create_subscription(Image, "affordance/overlay", self._on_overlay, 10)
        self.create_subscription(PoseStamped, "affordance/function_pose", self._on_pose, 10)

    def _on_pose(self, msg: PoseStamped) -> None:
        heard = self.schedule.settled_sound()
        if heard is None:
            return
        p, q = msg.pose.position, msg.pose.orientation
        point = np.array([p.x, p.y, p.z])
        approach = rotation_from_quaternion((q.x, q.y, q.z, q.w))[:, 2]
        true_point, true_normal = self.targets[heard]
        self.points[heard].append(point)
        self.point_errors_mm[heard].append(1000 * float(np.linalg.norm(point - true_point)))
        self.normal_errors_deg[heard].append(float(np.degrees(np.arccos(np.clip(approach @ true_normal, -1, 1)))))
        self.last_pose[heard] = (point, approach)

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


def draw_targets(image: np.ndarray, depth_scene: DepthScene, targets: dict[str, tuple[np.ndarray, np.ndarray]],
                 poses: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The scene with, per heard object, the true 3D point (white cross) and the node's last point (filled dot)
    with its approach axis (a line 5 cm out along it), projected through the camera."""
    import cv2

    picture = image.copy()
    intrinsics = depth_scene.intrinsics
    for name, (true_point, _) in targets.items():
        cv2.drawMarker(picture, project(true_point, intrinsics), (255, 255, 255), cv2.MARKER_CROSS, 14, 2)
        if name in poses:
            point, approach = poses[name]
            tip = project(point + 0.05 * approach, intrinsics)
            cv2.line(picture, tip, project(point, intrinsics), (255, 220, 0), 2, cv2.LINE_AA)
            cv2.circle(picture, project(point, intrinsics), 5, (255, 60, 0), -1, cv2.LINE_AA)
            cv2.putText(picture, name, (project(point, intrinsics)[0] + 8, project(point, intrinsics)[1] - 8),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return picture


def demo_scene(rng: np.random.Generator) -> tuple[Scene, DepthScene]:
    """The scene the demo streams, from the first draws of `rng`: SCENE_OBJECTS on a table, in colour and depth."""
    categories = [next(c for c in CATEGORIES if c.object == name) for name in SCENE_OBJECTS]
    scene = render_scene(rng, size=320, categories=categories)
    return scene, render_depth(scene)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avag_ros.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--seconds", type=float, default=40.0, help="how long to stream the scene")
    parser.add_argument("--segment-s", type=float, default=10.0, help="how long each object sounds in turn")
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT, help="weights to run")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--no-reuse", action="store_true",
                        help="run the image side on every frame (reuse.max_change 0), to compare with reuse")
    args = parser.parse_args(argv)
    if args.segment_s <= SETTLE_S:
        parser.error(f"--segment-s must exceed {SETTLE_S:g} s, the time a mask needs to follow a new sound")

    print(f"weights: {describe_weights(args.checkpoint)}", flush=True)
    rng = np.random.default_rng(args.seed)
    scene, depth_scene = demo_scene(rng)
    categories = scene.categories
    heard = categories[:2]
    args.out.mkdir(parents=True, exist_ok=True)
    clip = args.out / "sound.wav"
    soundfile.write(clip, np.concatenate([synthesize_sound(rng, c.sound, args.segment_s) for c in heard]),
                    SAMPLE_RATE)
    save_png(args.out / "scene.png", scene.image)
    ground_truth, targets = {}, {}
    depth_rule = {name: spec(f"depth.{name}").default for name in ("erode_px", "min_m", "max_m")}
    for index, (category, function) in enumerate(zip(heard, scene.function_masks)):
        ground_truth[category.object] = function
        targets[category.object] = true_target(depth_scene, function, index, **depth_rule)
        save_png(args.out / f"ground_truth_{category.object}.png", function.astype(np.uint8) * 255)
    print(f"scene: {', '.join(c.object for c in categories)}; the clip plays "
          + ", then ".join(f"{c.affordance.replace('_', ' ')} {c.object}" for c in heard)
          + f", {args.segment_s:g} s each, in a loop", flush=True)

    rclpy.init()
    grounding = GroundingNode(parameter_overrides=[
        Parameter("checkpoint", value=str(args.checkpoint)), Parameter("audio.source", value="file"),
        Parameter("audio.file", value=str(clip)), Parameter("audio.window_s", value=AUDIO_WINDOW_S),
        Parameter("max_rate_hz", value=0.0), Parameter("depth.enabled", value=True),
        *([Parameter("reuse.max_change", value=0.0)] if args.no_reuse else [])])
    if not isinstance(grounding.audio_source, FileSource):
        print("error: the grounding node did not configure (see its log above)", file=sys.stderr)
        grounding.destroy_node()
        rclpy.try_shutdown()
        return 1
    schedule = SoundSchedule(grounding.audio_source, args.segment_s, [c.object for c in heard])
    player = SamplePlayer([scene.image], rate_hz=10.0, frame_id="camera_color_optical_frame", encoding="bgr8",
                          depth=(depth_scene.depth_m, depth_scene.intrinsics))
    collector = MaskCollector(ground_truth, targets, schedule, args.out)
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
        points, normals = collector.point_errors_mm[name], collector.normal_errors_deg[name]
        if points:
            print(f"  3D while the {name} sounds: point {np.median(points):.1f} mm from the true one (p95 "
                  f"{np.percentile(points, 95):.1f}), approach axis {np.median(normals):.1f} deg from the true "
                  f"surface normal (p95 {np.percentile(normals, 95):.1f}), over {len(points)} poses; median point "
                  f"({', '.join(f'{c:.4f}' for c in np.median(collector.points[name], axis=0))}) m")
        else:
            print(f"  3D while the {name} sounds: no pose")
    targets_picture = args.out / "targets_3d.png"
    save_png(targets_picture, draw_targets(scene.image, depth_scene, targets, collector.last_pose))
    print(f"  overlays:   {', '.join(str(p) for p in collector.overlays.values()) or 'none'}; 3D targets: "
          f"{targets_picture}")
    return 0 if latencies.size else 1


if __name__ == "__main__":
    sys.exit(main())
