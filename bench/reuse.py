"""Image-feature reuse (avag_core.inference.view_reuse): masks per second on a still and on a moving 640x480 stream, with
reuse and without, and the predictor's time for a reused frame beside a full one.

    python bench/reuse.py [--presets avagformer_b0 avagformer_b5] [--size 512] [--row openvino:cpu:bf16]
        [--frames 12] [--max-age-s 2]

A row is BACKEND:DEVICE:PRECISION; the default is the fastest CPU row: OpenVINO bf16 where the CPU has bf16
instructions (AVX-512 BF16 or AMX), else OpenVINO fp32. Random seed-0 weights, exported once per preset.
- still: one synthetic table scene, each frame a new exposure with sensor noise (sigma 2 grey levels);
  moving: one of its objects slides 16 px (2.5 % of the width) per frame.
- The sound goes on in real time, as the node reads it: before each frame, the samples of the wall time since the
  last frame are written into the node's own ring buffer (avag_ros.audio_sources.RingBuffer, 2 s already
  recorded before the first frame), and the frame gets the node's clip, the latest audio.window_s aligned to
  whole log-mel windows (0.96 s). So a new window is embedded about once per 0.96 s, not once per frame.
- masks/s: frames over the wall time of `predict` on all of them, after one warm-up frame; with reuse at the
  node's defaults (reuse.max_change, reuse.max_age_s), so a still stream still takes a keyframe every max_age_s
  (on a machine so busy that a full frame takes longer than that, no frame can reuse).
- reused / +window / full ms: on the still stream, the median `predict` time of the frames that reused the
  keyframe and found every audio window cached, of those that reused it but embedded a new window, and of the
  frames without reuse.
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
from avag_ros.audio_sources import RingBuffer  # noqa: E402
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


class LiveSound:
    """A microphone's stream in wall time, read the node's way (avag_ros.inference_loop)."""

    PREROLL_S = 2.0

    def __init__(self, seed: int = 1) -> None:
        self._noise = np.random.default_rng(seed)
        self.buffer = RingBuffer(SAMPLE_RATE, capacity_s=10.0)
        self._started = time.perf_counter() - self.PREROLL_S

    def clip(self) -> np.ndarray:
        due = int((time.perf_counter() - self._started) * SAMPLE_RATE) - self.buffer.written
        if due > 0:
            self.buffer.write(self._noise.normal(0.0, 0.1, due).astype(np.float32), 0)
        return self.buffer.latest(spec("audio.window_s").default, align_s=EXAMPLE_SECONDS)


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


def run_stream(predictor: AffordancePredictor, frames: list[np.ndarray]) -> tuple:
    """-> masks per second, and per frame: time (ms), whether it reused, whether it embedded a new audio window;
    after one warm-up frame."""
    sound = LiveSound()
    predictor.predict(frames[0], sound.clip(), SAMPLE_RATE)
    times, reused, new_window = [], [], []
    started = time.perf_counter()
    for frame in frames[1:]:
        begun, cached = time.perf_counter(), len(predictor.audio_cache)
        predictor.predict(frame, sound.clip(), SAMPLE_RATE)
        times.append((time.perf_counter() - begun) * 1000)
        reused.append(predictor.view_reuse is not None and predictor.view_reuse.last_reused)
        new_window.append(len(predictor.audio_cache) > cached)
    return (len(frames) - 1) / (time.perf_counter() - started), times, reused, new_window


def median_ms(times: list[float]) -> str:
    return f"{statistics.median(times):.0f}" if times else "-"


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
        views = streams(frames)
        results = {}
        for reuse in (False, True):
            for name, stream in views.items():
                predictor.view_reuse = ViewReuse(spec("reuse.max_change").default, max_age_s) if reuse else None
                predictor.audio_cache = type(predictor.audio_cache)()
                results[name, reuse] = run_stream(predictor, stream)
        _, still_times, still_reused, new_window = results["still", True]
        cached_ms = [t for t, r, w in zip(still_times, still_reused, new_window) if r and not w]
        window_ms = [t for t, r, w in zip(still_times, still_reused, new_window) if r and w]
        print(f"| {preset} | {size} | {row} | {results['still', False][0]:.2f} | {results['still', True][0]:.2f} "
              f"({sum(still_reused)}/{frames} reused) | {results['moving', False][0]:.2f} | "
              f"{results['moving', True][0]:.2f} ({sum(results['moving', True][2])}/{frames} reused) | "
              f"{median_ms(cached_ms)} | {median_ms(window_ms)} | {median_ms(results['still', False][1])} |",
              flush=True)


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
          "+window ms | full ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        measure(preset, args.size, args.row, args.frames, args.max_age_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
