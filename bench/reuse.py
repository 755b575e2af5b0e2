"""Image-feature reuse (avag_core.inference.view_reuse): masks per second on a still and on a moving 640x480 stream, with
reuse and without, and the predictor's time for a reused frame beside a full one.

    python bench/reuse.py [--presets avagformer_b0 avagformer_b5] [--size 512] [--row openvino:cpu:bf16]
        [--frames 12] [--max-age-s 2]

A row is BACKEND:DEVICE:PRECISION; the default is the fastest CPU row: OpenVINO bf16 where the CPU has bf16
instructions (AVX-512 BF16 or AMX), else OpenVINO fp32. Random seed-0 weights, exported once per preset.
- still: one synthetic table scene, each frame a new exposure with sensor noise (sigma 2 grey levels);
  moving: one of its objects slides 16 px (2.5 % of the width) per frame.
- The sound goes on: each frame's 2-window clip starts one log-mel window (0.96 s) later than the previous
  frame's, so that every frame embeds one new window, as a stream does at about 1 frame a second.
- masks/s: frames over the wall time of `predict` on all of them, after one warm-up frame; with reuse at the
  node's defaults (reuse.max_change, reuse.max_age_s), so a still stream still takes a keyframe every max_age_s
  (on a machine so busy that a full frame takes longer than that, no frame can reuse).
- reused / full ms: the median `predict` time of the frames that reused the keyframe, and of the frames without
  reuse, on the still stream.
Before the table, the fingerprint change two noisy exposures of a still view give, and the change of an object
moved by 2.5 % of the width: what the default reuse.max_change sits between.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # avag_ros.parameters, run from anywhere

from avag_core import AffordancePredictor, build_model  # noqa: E402
from avag_core.audio import EXAMPLE_SECONDS  # noqa: E402
from avag_core.data.synthetic import render_scene  # noqa: E402
from avag_core.inference.export import export_onnx  # noqa: E402
from avag_core.inference.view_reuse import ViewReuse, view_change, view_fingerprint  # noqa: E402
from avag_ros.parameters import spec  # noqa: E402

CAMERA_SIZE = (640, 480)  # width, height
NOISE_SIGMA = 2.0
MOVE_PX = 16
SAMPLE_RATE = 16000


def fastest_cpu_row() -> str:
    flags = Path("/proc/cpuinfo").read_text()
    return "openvino:cpu:bf16" if "avx512_bf16" in flags or "amx_bf16" in flags else "openvino:cpu:fp32"


def exposure(view: np.ndarray, rng: np.random.Generator, sigma: float = NOISE_SIGMA) -> np.ndarray:
    return np.clip(view + rng.normal(0.0, sigma, view.shape), 0, 255).astype(np.uint8)


def slid(view: np.ndarray, mask: np.ndarray, dx: int) -> np.ndarray:
    """`view` with the object under `mask` drawn `dx` pixels to the right."""
    moved = view.copy()
    ys, xs = np.nonzero(mask)
    inside = xs + dx < view.shape[1]
    moved[ys[inside], xs[inside] + dx] = view[ys[inside], xs[inside]]
    return moved


def table_scene() -> tuple[np.ndarray, list[np.ndarray]]:
    scene = render_scene(np.random.default_rng(5), size=320)
    masks = [cv2.resize(m.astype(np.uint8), CAMERA_SIZE, interpolation=cv2.INTER_NEAREST).astype(bool)
             for m in scene.object_masks]
    return cv2.resize(scene.image, CAMERA_SIZE, interpolation=cv2.INTER_AREA), masks


def streams(frames: int) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    view, masks = table_scene()
    largest = max(masks, key=np.sum)
    moving, shifted_view, shifted_mask = [], view, largest
    for _ in range(frames + 1):
        moving.append(exposure(shifted_view, rng))
        shifted_view = slid(shifted_view, shifted_mask, MOVE_PX)
        shifted_mask = np.roll(shifted_mask, MOVE_PX, axis=1)
    return {"still": [exposure(view, rng) for _ in range(frames + 1)], "moving": moving}


def clips(frames: int) -> list[np.ndarray]:
    window = int(EXAMPLE_SECONDS * SAMPLE_RATE)
    sound = np.random.default_rng(1).normal(0.0, 0.1, (frames + 2) * window).astype(np.float32)
    return [sound[k * window:(k + 2) * window] for k in range(frames + 1)]


def fingerprint_figures() -> None:
    rng = np.random.default_rng(2)
    view, masks = table_scene()
    print("fingerprint change (mean absolute difference on 32x24 grey, grey levels):")
    for size in (CAMERA_SIZE, (320, 240)):
        resized = cv2.resize(view, size, interpolation=cv2.INTER_AREA)
        for sigma in (2.0, 3.0):
            noise = [view_change(view_fingerprint(exposure(resized, rng, sigma)),
                                 view_fingerprint(exposure(resized, rng, sigma))) for _ in range(10)]
            print(f"  {size[0]}x{size[1]}, two exposures, noise sigma {sigma:g}: median {np.median(noise):.3f}, "
                  f"max {max(noise):.3f}")
    moved = [view_change(view_fingerprint(exposure(slid(view, m, MOVE_PX), rng)), view_fingerprint(exposure(view, rng)))
             for m in masks]
    print(f"  640x480, each object ({', '.join(f'{m.mean():.1%}' for m in masks)} of the frame) moved {MOVE_PX} px: "
          f"{', '.join(f'{c:.3f}' for c in moved)}")
    print(f"  default reuse.max_change: {spec('reuse.max_change').default:g}\n")


def run_stream(predictor: AffordancePredictor, frames: list[np.ndarray], sounds: list[np.ndarray]) -> tuple:
    """-> masks per second, per-frame times (ms) and whether each frame reused, after one warm-up frame."""
    predictor.predict(frames[0], sounds[0], SAMPLE_RATE)
    times, reused = [], []
    started = time.perf_counter()
    for frame, sound in zip(frames[1:], sounds[1:]):
        begun = time.perf_counter()
        predictor.predict(frame, sound, SAMPLE_RATE)
        times.append((time.perf_counter() - begun) * 1000)
        reused.append(predictor.view_reuse is not None and predictor.view_reuse.last_reused)
    return (len(frames) - 1) / (time.perf_counter() - started), times, reused


def measure(preset: str, size: int, row: str, frames: int, max_age_s: float) -> None:
    backend, device, precision = row.split(":")
    torch.manual_seed(0)
    model = build_model(preset, image_size=size).eval()
    with tempfile.TemporaryDirectory(prefix="avag-reuse-bench-") as folder:
        if backend == "torch":
            predictor = AffordancePredictor.from_model(model, device, precision)
        else:
            predictor = AffordancePredictor.from_checkpoint(export_onnx(model, folder), device, precision,
                                                            backend=backend)
        del model
        sounds, views = clips(frames), streams(frames)
        results = {}
        for reuse in (False, True):
            for name, stream in views.items():
                predictor.view_reuse = ViewReuse(spec("reuse.max_change").default, max_age_s) if reuse else None
                predictor.audio_cache = type(predictor.audio_cache)()
                results[name, reuse] = run_stream(predictor, stream, sounds)
        full_ms = statistics.median(results["still", False][1])
        _, still_times, still_reused = results["still", True]
        reused_ms = [t for t, r in zip(still_times, still_reused) if r]
        print(f"| {preset} | {size} | {row} | {results['still', False][0]:.2f} | {results['still', True][0]:.2f} "
              f"({sum(still_reused)}/{len(still_reused)} reused) | {results['moving', False][0]:.2f} | "
              f"{results['moving', True][0]:.2f} ({sum(results['moving', True][2])}/{frames} reused) | "
              f"{statistics.median(reused_ms) if reused_ms else float('nan'):.0f} | {full_ms:.0f} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["avagformer_b0", "avagformer_b5"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--row", default=fastest_cpu_row(), help="BACKEND:DEVICE:PRECISION")
    parser.add_argument("--frames", type=int, default=12, help="timed frames per stream")
    parser.add_argument("--max-age-s", type=float, default=spec("reuse.max_age_s").default,
                        help="reuse.max_age_s (default: the node's)")
    args = parser.parse_args(argv)
    fingerprint_figures()
    print(f"masks per second, 640x480 stream, {args.frames} frames, {torch.get_num_threads()} torch threads")
    print("| preset | px | row | still, no reuse | still, reuse | moving, no reuse | moving, reuse | reused ms | "
          "full ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        measure(preset, args.size, args.row, args.frames, args.max_age_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
