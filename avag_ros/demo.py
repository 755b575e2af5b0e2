"""The demo: the grounding node on a synthetic scene, with no GPU, camera, microphone or downloads.

    python -m avag_ros.demo [--out demo_output] [--seconds 40] [--train-minutes 6]

1. Weights: no pretrained AVAGFormer can be downloaded here, so the first run trains `avagformer_b0` on the
   synthetic task (training/make_synthetic.py) for a few minutes and caches the checkpoint in
   $XDG_CACHE_HOME/avag_ros (default ~/.cache/avag_ros); later runs reuse it. `--checkpoint` uses yours.
2. A synthetic scene with several objects and the sound of one of them.
3. The grounding node (audio.source = file, looping that sound) and the sample player (the scene as a 10 Hz
   camera) run over DDS; the overlays are saved, and a summary gives frames in, masks out, latency (image stamp
   to mask receipt) and the mIoU of the function masks against the scene's ground truth.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
import soundfile
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from avag_core.data.synthetic import SAMPLE_RATE, render_scene, synthesize_sound
from avag_core.image import save_png
from avag_core.metrics import sample_iou
from avag_core.weights import load_checkpoint

from .conversions import image_to_rgb
from .grounding_node import GroundingNode
from .sample_player import SamplePlayer

REPO = Path(__file__).resolve().parents[1]
DEMO_IMAGE_SIZE = 96


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "avag_ros"


def run_script(name: str, *args) -> None:
    script = REPO / "training" / name
    if not script.is_file():
        raise SystemExit(f"error: {script} not found: the demo trains its weights from a source checkout")
    subprocess.run([sys.executable, str(script), *map(str, args)], check=True)


def demo_checkpoint(minutes: float) -> Path:
    """The cached synthetic-task checkpoint, trained now if there is none."""
    cache = cache_dir()
    checkpoint = cache / "demo_avagformer_b0.pt"
    if not checkpoint.is_file():
        print(f"No AVAGFormer weights can be downloaded here: training avagformer_b0 on the synthetic task for "
              f"{minutes:g} minutes (cached in {cache} for the next run).", flush=True)
        data, index, run = cache / "synthetic", cache / "synthetic_index", cache / "demo_run"
        if not (data / "splits.json").is_file():
            run_script("make_synthetic.py", "--out", data, "--num", 1200, "--seed", 0, "--size", DEMO_IMAGE_SIZE)
        run_script("prepare_dataset.py", "--root", data, "--out", index, "--pairs-per-image", 4)
        run_script("train.py", "--config", REPO / "training" / "configs" / "synthetic_b0.yaml", "--data", index,
                   "--out-dir", run, "--image-size", DEMO_IMAGE_SIZE, "--epochs", 1000, "--max-minutes", minutes)
        (run / "last.pt").replace(checkpoint)
    return checkpoint


def describe_weights(path: Path) -> str:
    payload = load_checkpoint(path)
    config = payload["config"]
    description = f"{path}: {config['backbone']} backbone, {config['image_size']}px"
    if "step" in payload:
        val = payload.get("val", {})
        description += (f", trained {payload['step']} steps on the synthetic task"
                        f" (synthetic val mIoU_f {val.get('mIoU_f', float('nan')):.1f}); not AVAGD weights")
    return description


class MaskCollector(Node):
    """Receives the node's outputs, scores the function masks and keeps a few overlays."""

    def __init__(self, ground_truth: np.ndarray, out: Path, keep: int = 5) -> None:
        super().__init__("demo_collector")
        self.ground_truth, self.out, self.keep = ground_truth, out, keep
        self.ious: list[float] = []
        self.latencies_ms: list[float] = []
        self.overlays = 0
        self.create_subscription(Image, "affordance/function_mask", self._on_mask, 10)
        self.create_subscription(Image, "affordance/overlay", self._on_overlay, 10)

    def _on_mask(self, msg: Image) -> None:
        stamp = rclpy.time.Time.from_msg(msg.header.stamp)
        self.latencies_ms.append((self.get_clock().now() - stamp).nanoseconds / 1e6)
        mask = image_to_rgb(msg)[..., 0] > 127
        self.ious.append(sample_iou(mask.astype(np.float32), self.ground_truth.astype(np.float32)))

    def _on_overlay(self, msg: Image) -> None:
        if self.overlays < self.keep:
            save_png(self.out / f"overlay_{self.overlays:02d}.png", image_to_rgb(msg))
            self.overlays += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avag_ros.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--seconds", type=float, default=40.0, help="how long to stream the scene")
    parser.add_argument("--train-minutes", type=float, default=6.0)
    parser.add_argument("--checkpoint", type=Path, help="use these weights instead of the demo's")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)

    checkpoint = args.checkpoint or demo_checkpoint(args.train_minutes)
    print(f"weights: {describe_weights(checkpoint)}", flush=True)
    rng = np.random.default_rng(args.seed)
    scene = render_scene(rng, size=320)
    target = scene.categories[0]
    args.out.mkdir(parents=True, exist_ok=True)
    clip = args.out / f"sound_{target.object}_{target.affordance}.wav"
    soundfile.write(clip, synthesize_sound(rng, target.sound, 3.0), SAMPLE_RATE)
    save_png(args.out / "scene.png", scene.image)
    save_png(args.out / "ground_truth_function_mask.png", scene.function_masks[0].astype(np.uint8) * 255)
    print(f"scene: {', '.join(c.object for c in scene.categories)}; sound: {target.affordance} {target.object} "
          f"({clip.name})", flush=True)

    rclpy.init()
    grounding = GroundingNode(parameter_overrides=[
        Parameter("checkpoint", value=str(checkpoint)), Parameter("audio.source", value="file"),
        Parameter("audio.file", value=str(clip)), Parameter("max_rate_hz", value=0.0)])
    player = SamplePlayer([scene.image], rate_hz=10.0, frame_id="camera", encoding="bgr8")
    collector = MaskCollector(scene.function_masks[0], args.out)
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
        print(f"  mIoU_f:     {100 * np.mean(collector.ious):.1f} against the scene's ground truth")
    print(f"  overlays:   {collector.overlays} in {args.out}/")
    return 0 if latencies.size else 1


if __name__ == "__main__":
    sys.exit(main())
