"""The demo: the grounding node hears sounds start, change and stop, and segments the object it hears, from each
sound's onset on. No GPU, camera, microphone or download.

    python -m avag_ros.demo [--out demo_output] [--seconds 45] [--checkpoint CKPT] [--no-reuse]

1. Weights: `avag_ros/data/demo_avagformer_b0.pt`, an avagformer_b0 trained from scratch by `training/train.py`
   on the synthetic task (how, and its scores, in `avag_ros/data/demo_avagformer_b0.md`). Not AVAGD weights:
   it knows the synthetic objects only. `--checkpoint` runs yours instead.
2. A synthetic scene of three objects on a table, seen by an RGB-D camera (avag_ros.tools.demo_depth: the objects'
   tops at known heights, the second one tilted), and one clip looping PLAN: after quiet the hammer for 5 s,
   straight into the mug for 5 s, quiet, the mug for 0.6 s, quiet, the hammer for 0.6 s, quiet.
3. The grounding node (audio.source = file, looping that clip, as a microphone would hear it; depth.enabled) and
   the sample player (the scene as a 10 Hz camera, with its aligned depth and CameraInfo) run over DDS. Every
   function mask is scored as a planner would take it, on arrival: it belongs to the sound last heard to begin
   by then (its onset: the first 50 ms of it at audio.min_level_db, found in the clip), or to quiet once that
   sound ended more than audio.hold_s and a margin before, and is right at an IoU of 0.5 with that object's true
   function part. Per sound the summary gives the time from its onset to the first
   right mask, the masks published before it (and how many showed the other object), and the mIoU_f over every
   mask from the onset; per object the 3D errors: the point's distance from the one a perfect mask would give,
   and the approach axis's angle from the object's true surface normal. One overlay per object and a picture of
   the 3D targets over the scene are saved.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
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

from ..audio.sources import FileSource
from ..data import DEMO_CHECKPOINT
from ..depth.geometry import rotation_from_quaternion
from ..grounding_node import GroundingNode
from ..messages.images import image_to_rgb
from ..parameters import spec
from .demo_depth import DepthScene, project, render_depth, true_target
from .sample_player import SamplePlayer

# Three seen categories of the synthetic task; the first two are heard, the third only seen.
SCENE_OBJECTS = ("hammer", "mug", "lamp")
# The clip, looped: (object heard or None for quiet, seconds)
PLAN = ((None, 2.0), ("hammer", 5.0), ("mug", 5.0), (None, 3.0), ("mug", 0.6), (None, 3.0), ("hammer", 0.6),
        (None, 3.0))
QUIET_RMS = 0.0005  # a quiet room, -66 dBFS: well below audio.min_level_db
RIGHT_IOU = 0.5
# A mask arriving this long after its sound ended belongs to the quiet: the node's event lasts audio.hold_s past
# the sound, and the mask's inference and delivery take a little more.
QUIET_AFTER_S = spec("audio.hold_s").default + 0.5
AUDIO_WINDOW_S = 2.0


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


@dataclass(frozen=True)
class Sound:
    """One sound of the looped clip: the object heard, what came just before it (an object, or None: quiet), and
    where it lies in the loop: its span, and its onset, where it is first heard (a hammer's first blow)."""
    name: str
    before: str | None
    start_s: float
    seconds: float
    onset_s: float

    @property
    def label(self) -> str:
        return f"{self.name} {self.seconds:g} s after " + (f"the {self.before}" if self.before else "quiet")


def synthesize_clip(rng: np.random.Generator, plan=PLAN) -> tuple[np.ndarray, list[Sound], float]:
    """The looped clip: each object's synthetic sound (avag_core.data.synthetic) for its span, quiet between; its
    sounds, each with its onset (the start of the first 50 ms whose RMS reaches audio.min_level_db), and the loop's
    length."""
    sound_of = {c.object: c.sound for c in CATEGORIES}
    parts = [synthesize_sound(rng, sound_of[name], seconds) if name is not None
             else rng.normal(0.0, QUIET_RMS, int(seconds * SAMPLE_RATE)).astype(np.float32)
             for name, seconds in plan]
    sounds, start, before = [], 0, None
    hop, level = SAMPLE_RATE // 100, 10 ** (spec("audio.min_level_db").default / 20)
    for (name, seconds), part in zip(plan, parts):
        if name is not None:  # the first 50 ms at the level, as the node's sound events take a level onset
            hops = np.mean(part[:part.size // hop * hop].astype(np.float64).reshape(-1, hop) ** 2, axis=1)
            rms = np.sqrt(np.convolve(hops, np.ones(5) / 5, "valid"))
            onset = start + hop * int(np.argmax(rms >= level))
            sounds.append(Sound(name, before, start / SAMPLE_RATE, seconds, onset / SAMPLE_RATE))
        before, start = name, start + part.size
    return np.concatenate(parts), sounds, start / SAMPLE_RATE


@dataclass
class SoundMasks:
    """The masks that arrived for one sound's occurrence: (seconds after its onset, IoU with each object's truth)."""
    sound: Sound
    masks: list[tuple[float, dict[str, float]]] = field(default_factory=list)

    def first_right(self) -> tuple[float | None, int, int]:
        """When the first right mask came after the onset (None: never), the masks before it, and how many of those
        showed another heard object."""
        for index, (after_s, ious) in enumerate(self.masks):
            if ious[self.sound.name] >= RIGHT_IOU:
                before = self.masks[:index]
                break
        else:
            after_s, before = None, self.masks
        others = sum(any(iou >= RIGHT_IOU for name, iou in ious.items() if name != self.sound.name)
                     for _, ious in before)
        return after_s, len(before), others


class SoundClock:
    """Which sound a moment of the node's file source belongs to, from how far it has played the looped clip."""

    def __init__(self, source: FileSource, sounds: list[Sound], loop_s: float) -> None:
        self.source, self.sounds, self.loop_s = source, sounds, loop_s

    def now(self) -> tuple[int, Sound, float] | None:
        """(loop number, the sound last begun, seconds since its onset), or None in quiet."""
        played_s = self.source.buffer.written / self.source.sample_rate
        loop, position = divmod(played_s, self.loop_s)
        begun = [s for s in self.sounds if s.onset_s <= position]
        if not begun:  # the first sound of the loop has not begun: the last of the previous loop may still hold
            loop, position = loop - 1, position + self.loop_s
            begun = self.sounds
        if loop < 0:
            return None
        sound = begun[-1]
        after_s = position - sound.onset_s
        over = position - sound.start_s - sound.seconds
        return None if over > QUIET_AFTER_S else (int(loop), sound, after_s)


class MaskCollector(Node):
    """Scores each function mask and 3D target against the object whose sound it belongs to, on arrival, and
    keeps one overlay per object."""

    def __init__(self, ground_truth: dict[str, np.ndarray], targets: dict[str, tuple[np.ndarray, np.ndarray]],
                 clock: SoundClock, out: Path) -> None:
        super().__init__("demo_collector")
        self.ground_truth, self.targets, self.clock, self.out = ground_truth, targets, clock, out
        self.heard: dict[tuple[int, Sound], SoundMasks] = {}
        self.quiet_masks = 0
        self.point_errors_mm: dict[str, list[float]] = defaultdict(list)
        self.normal_errors_deg: dict[str, list[float]] = defaultdict(list)
        self.points: dict[str, list[np.ndarray]] = defaultdict(list)
        self.last_pose: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.latencies_ms: list[float] = []
        self.overlays: dict[str, Path] = {}
        self.create_subscription(Image, "affordance/function_mask", self._on_mask, 10)
        self.create_subscription(Image, "affordance/overlay", self._on_overlay, 10)
        self.create_subscription(PoseStamped, "affordance/function_pose", self._on_pose, 10)

    def _on_mask(self, msg: Image) -> None:
        stamp = rclpy.time.Time.from_msg(msg.header.stamp)
        self.latencies_ms.append((self.get_clock().now() - stamp).nanoseconds / 1e6)
        now = self.clock.now()
        if now is None:
            self.quiet_masks += 1
            return
        loop, sound, after_s = now
        mask = torch.from_numpy(image_to_rgb(msg)[..., 0] > 127).float()
        ious = {name: sample_iou(mask, torch.from_numpy(truth).float()) for name, truth in self.ground_truth.items()}
        self.heard.setdefault((loop, sound), SoundMasks(sound)).masks.append((after_s, ious))

    def _on_pose(self, msg: PoseStamped) -> None:
        now = self.clock.now()
        if now is None:
            return
        name = now[1].name
        p, q = msg.pose.position, msg.pose.orientation
        point = np.array([p.x, p.y, p.z])
        approach = rotation_from_quaternion((q.x, q.y, q.z, q.w))[:, 2]
        true_point, true_normal = self.targets[name]
        self.points[name].append(point)
        self.point_errors_mm[name].append(1000 * float(np.linalg.norm(point - true_point)))
        self.normal_errors_deg[name].append(float(np.degrees(np.arccos(np.clip(approach @ true_normal, -1, 1)))))
        self.last_pose[name] = (point, approach)

    def _on_overlay(self, msg: Image) -> None:
        now = self.clock.now()
        if now is not None:  # the latest of each object's, which is seldom from its very first frames
            self.overlays[now[1].name] = self.out / f"overlay_{now[1].name}.png"
            save_png(self.overlays[now[1].name], image_to_rgb(msg))


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
    parser.add_argument("--seconds", type=float, default=45.0, help="how long to stream the scene")
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT, help="weights to run")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--no-reuse", action="store_true",
                        help="run the image side on every frame (reuse.max_change 0), to compare with reuse")
    args = parser.parse_args(argv)

    print(f"weights: {describe_weights(args.checkpoint)}", flush=True)
    rng = np.random.default_rng(args.seed)
    scene, depth_scene = demo_scene(rng)
    audio, sounds, loop_s = synthesize_clip(rng)
    heard = sorted({s.name for s in sounds}, key=SCENE_OBJECTS.index)
    args.out.mkdir(parents=True, exist_ok=True)
    clip = args.out / "sound.wav"
    soundfile.write(clip, audio, SAMPLE_RATE)
    save_png(args.out / "scene.png", scene.image)
    ground_truth, targets = {}, {}
    depth_rule = {name: spec(f"depth.{name}").default for name in ("erode_px", "min_m", "max_m")}
    for index, (category, function) in enumerate(zip(scene.categories, scene.function_masks)):
        if category.object in heard:
            ground_truth[category.object] = function
            targets[category.object] = true_target(depth_scene, function, index, **depth_rule)
            save_png(args.out / f"ground_truth_{category.object}.png", function.astype(np.uint8) * 255)
    print(f"scene: {', '.join(c.object for c in scene.categories)}; the clip loops every {loop_s:g} s: "
          + ", ".join(f"{name or 'quiet'} {seconds:g} s" for name, seconds in PLAN), flush=True)

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
    player = SamplePlayer([scene.image], rate_hz=10.0, frame_id="camera_color_optical_frame", encoding="bgr8",
                          depth=(depth_scene.depth_m, depth_scene.intrinsics))
    collector = MaskCollector(ground_truth, targets, SoundClock(grounding.audio_source, sounds, loop_s), args.out)
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
    print_summary(args, player, grounding, collector, sounds)
    targets_picture = args.out / "targets_3d.png"
    save_png(targets_picture, draw_targets(scene.image, depth_scene, targets, collector.last_pose))
    print(f"  overlays:   {', '.join(str(p) for p in collector.overlays.values()) or 'none'}; 3D targets: "
          f"{targets_picture}")
    return 0 if collector.latencies_ms else 1


def print_summary(args, player: SamplePlayer, grounding: GroundingNode, collector: MaskCollector,
                  sounds: list[Sound]) -> None:
    latencies = np.array(collector.latencies_ms)
    print("\nsummary")
    print(f"  frames in:  {player.published} images at 10 Hz over {args.seconds:g} s")
    print(f"  masks out:  {len(latencies)} (the node keeps only the newest image; {grounding.stats.dropped} "
          "older frames skipped)")
    if latencies.size:
        print(f"  latency:    median {np.median(latencies):.0f} ms, p95 {np.percentile(latencies, 95):.0f} ms "
              "(image stamp to mask receipt)")
    print(f"  masks in quiet: {collector.quiet_masks} (more than {QUIET_AFTER_S:g} s after a sound ended)")
    print(f"  per sound, from its onset (a mask is right at IoU >= {RIGHT_IOU:g} with the heard object's "
          "function part):")
    for sound in sounds:
        occurrences = [masks for (_, s), masks in sorted(collector.heard.items(), key=lambda kv: kv[0][0])
                       if s == sound]
        firsts = [masks.first_right() for masks in occurrences]
        found = [after_s for after_s, _, _ in firsts if after_s is not None]
        first = (f"first right mask {1000 * np.median(found):.0f} ms after the onset (max {1000 * max(found):.0f})"
                 if found else "no right mask")
        before = sum(count for _, count, _ in firsts)
        others = sum(other for _, _, other in firsts)
        line = (f"    {sound.label}: {len(occurrences)} onsets, {len(found)} with a right mask; {first}; "
                f"{before} masks before it, {others} of another object")
        if sound.before is not None:  # a change without quiet: how long the old object stayed
            old = sum(ious[sound.before] >= RIGHT_IOU for masks in occurrences for _, ious in masks.masks)
            line += f"; {old} masks of the {sound.before} after the change"
        print(line)
    for name in sorted({s.name for s in sounds}, key=SCENE_OBJECTS.index):
        ious = [ious[name] for (_, s), masks in collector.heard.items() if s.name == name for _, ious in masks.masks]
        score = f"{100 * np.mean(ious):.1f}" if ious else "n/a"
        print(f"  mIoU_f while the {name} sounds: {score} over {len(ious)} masks, every mask from the onsets on "
              f"(ground truth: the {name}'s function part)")
        points, normals = collector.point_errors_mm[name], collector.normal_errors_deg[name]
        if points:
            print(f"  3D while the {name} sounds: point {np.median(points):.1f} mm from the true one (p95 "
                  f"{np.percentile(points, 95):.1f}), approach axis {np.median(normals):.1f} deg from the true "
                  f"surface normal (p95 {np.percentile(normals, 95):.1f}), over {len(points)} poses; median point "
                  f"({', '.join(f'{c:.4f}' for c in np.median(collector.points[name], axis=0))}) m")
        else:
            print(f"  3D while the {name} sounds: no pose")


if __name__ == "__main__":
    sys.exit(main())
