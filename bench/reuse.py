"""Image-feature reuse (avag_core.inference.view_reuse): masks per second on a still and on a moving 640x480
stream, with reuse and without, and the predictor's time for a reused frame beside a full one.

    python bench/reuse.py [--presets avagformer_b0 avagformer_b5] [--size 512] [--row openvino:cpu:bf16]
        [--seconds 12] [--rounds 4] [--max-age-s 2 5] [--camera-hz 30] [--pairs 12]

A row is BACKEND:DEVICE:PRECISION; the default is OpenVINO bf16 where the CPU has bf16 instructions (AVX-512 BF16
or AMX), else OpenVINO fp32; openvino:cpu:int8 quantizes the export first (synthetic calibration, minutes for
b5). Random seed-0 weights, exported once per preset.
- still: one synthetic table scene, each frame a new exposure with sensor noise (sigma 2 grey levels);
  moving: its largest object drawn again 16 px (2.5 % of the width) further right each frame, six steps right,
  six back.
- The sound goes on in real time, as the node reads it: before each frame, the samples of the time since the
  last frame are written into the node's own ring buffer (avag_ros.audio.ring_buffer.RingBuffer, 2 s already
  recorded before the first frame, one sound event from its start), and the frame gets the node's clip of that
  event (avag_ros.audio.sound_events): its last whole log-mel windows (0.96 s) that fit in audio.window_s. So a new
  window is embedded about once per 0.96 s, not once per frame.
- The camera runs at --camera-hz and the node takes its newest frame whenever the predictor is free, as the
  node's newest-frame slot does: a frame done sooner than the next camera frame waits for it. The frames taken
  are the stream's frames in a loop.
- Each stream runs for --seconds, in --rounds turns alternating with the others, and has its own clock that runs
  only during its turns: its sound and its keyframe's age see one unbroken stream.
- masks/s: frames over the stream's time (`predict` and the waits for the camera), after one warm-up frame; with
  reuse at the node's reuse.max_change and each --max-age-s, so a still stream renews its keyframe every
  max_age_s beside the stream, which the figure counts: a turn goes on until no renewal is running, so that none
  runs in another stream's turn.
- On the still stream with reuse, the median `predict` time of the reused frames whose sound was the last frame's
  (the head's output reused too), of the reused frames with a new sound window (the head runs on the kept maps:
  what every frame would cost if the sound changed every frame), and of the frames without reuse (full).
- changed ms: the cost reuse adds to a changed view, measured in pairs (--pairs) apart from the streams, since
  a stream's dozen full frames vary more than that cost: each moving frame is predicted with reuse on (where it
  differs from the keyframe, the frame before it, so it becomes the keyframe) and with reuse off, back to back,
  in alternating order; the medians of both and their ratio.
Before the table, the fingerprint change two noisy exposures of a still view give, and the change of an object
moved by 2.5 % of the width: what the default reuse.max_change sits between.
"""
from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # avag_ros.parameters, run from anywhere

from avag_core import AffordancePredictor, build_model  # noqa: E402
from avag_core.inference.predictor import AudioEmbeddingCache  # noqa: E402
from avag_core.inference.quantize import quantize_export  # noqa: E402
from avag_core.data.synthetic import render_scene  # noqa: E402
from avag_core.inference.export import export_onnx  # noqa: E402
from avag_core.inference.view_reuse import ViewReuse, view_change, view_fingerprint  # noqa: E402
from avag_ros.audio.ring_buffer import RingBuffer  # noqa: E402
from avag_ros.audio.sound_events import SoundEvents  # noqa: E402
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
    """`view` with the object under `mask` drawn again `dx` pixels to the right. Its old place is left as it was:
    less change than a real move, which would also uncover what lay behind it."""
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


def streams() -> dict[str, list[np.ndarray]]:
    """12 noisy exposures of a still view, and 12 frames of a moving object: each a loop."""
    rng = np.random.default_rng(0)
    view, masks = table_scene()
    largest = max(masks, key=np.sum)
    # to and fro over six steps, so that it never reaches the frame's edge, where less of it would show
    steps = [min(k, 12 - k) for k in range(12)]
    moving = [exposure(slid(view, largest, MOVE_PX * step), rng) for step in steps]
    return {"still": [exposure(view, rng) for _ in range(12)], "moving": moving}


class LiveSound:
    """A microphone's stream in `clock`'s time, read the node's way (avag_ros.inference_loop): one sound event that
    began PREROLL_S before the first frame, and its clip."""

    PREROLL_S = 2.0

    def __init__(self, clock: Callable[[], float], seed: int = 1) -> None:
        self._noise = np.random.default_rng(seed)
        self._clock = clock
        self.buffer = RingBuffer(SAMPLE_RATE, capacity_s=10.0)
        self._events = SoundEvents(lambda: self.buffer, itertools.count(1))

    def clip(self) -> np.ndarray:
        due = int((self._clock() + self.PREROLL_S) * SAMPLE_RATE) - self.buffer.written
        if due > 0:
            self.buffer.write(self._noise.normal(0.0, 0.1, due).astype(np.float32), 0)
        state = self._events.update(spec("audio.min_level_db").default, spec("audio.hold_s").default,
                                    spec("audio.change_threshold").default)
        return self._events.clip(state.event, state.analysed, spec("audio.window_s").default).samples


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


class StreamRun:
    """One stream through the shared predictor with its own reuse state, audio cache and sound, timed in turns so
    that the four streams of a preset alternate (the machine's drift then falls on all of them alike). Its clock
    runs only during its own turns: to its keyframe and its sound, the other streams' turns never happened."""

    def __init__(self, predictor: AffordancePredictor, frames: list[np.ndarray], max_age_s: float | None,
                 camera_hz: float) -> None:
        self.predictor, self.frames, self.camera_hz = predictor, frames, camera_hz
        self._clock_before_turn = 0.0
        self._turn_started: float | None = None
        self.reuse = None if max_age_s is None else ViewReuse(spec("reuse.max_change").default, max_age_s,
                                                               clock=self.clock)
        self.audio_cache = AudioEmbeddingCache()
        self.sound = LiveSound(self.clock)
        self.times: list[float] = []  # ms per frame
        self.reused: list[bool] = []
        self.head_reused: list[bool] = []
        self.busy_s = 0.0
        self.warmed = False

    def clock(self) -> float:
        """Seconds of this stream's own turns so far."""
        if self._turn_started is None:
            return self._clock_before_turn
        return self._clock_before_turn + time.perf_counter() - self._turn_started

    def run(self, seconds: float) -> None:
        predictor = self.predictor
        # the predictor's last head output is then another stream's: this turn's first reused frame reruns the head
        predictor.view_reuse, predictor.audio_cache = self.reuse, self.audio_cache
        self._turn_started = time.perf_counter()
        if not self.warmed:
            predictor.predict(self.frames[0], self.sound.clip(), SAMPLE_RATE)
            self.warmed = True
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or (self.reuse is not None and self.reuse.renewing):
            frame = self.frames[(len(self.times) + 1) % len(self.frames)]
            taken_at, begun = self.clock(), time.perf_counter()
            predictor.predict(frame, self.sound.clip(), SAMPLE_RATE)
            self.times.append((time.perf_counter() - begun) * 1000)
            self.reused.append(self.reuse is not None and self.reuse.last_reused)
            self.head_reused.append(predictor.last_head_reused)
            next_camera_frame = (math.floor(taken_at * self.camera_hz) + 1) / self.camera_hz
            time.sleep(max(0.0, next_camera_frame - self.clock()))
        self.busy_s += time.perf_counter() - started
        self._clock_before_turn, self._turn_started = self.clock(), None

    def rate(self) -> str:
        shown = f"{len(self.times) / self.busy_s:.2f}"
        return shown if self.reuse is None else f"{shown} ({sum(self.reused)}/{len(self.reused)} reused)"

    def median_ms(self, reused: bool | None = None, head_reused: bool | None = None) -> str:
        """Median time of the frames that reused the keyframe (or not) and the head's output (or not); None: any."""
        times = [t for t, r, h in zip(self.times, self.reused, self.head_reused)
                 if reused in (None, r) and head_reused in (None, h)]
        return f"{statistics.median(times):.0f}" if times else "-"


def changed_view_ms(predictor: AffordancePredictor, frames: list[np.ndarray], pairs: int) -> str:
    clip = np.random.default_rng(3).normal(0.0, 0.1, 2 * SAMPLE_RATE).astype(np.float32)
    reuse = ViewReuse(spec("reuse.max_change").default, spec("reuse.max_age_s").default)
    times: dict[bool, list[float]] = {True: [], False: []}
    predictor.view_reuse, predictor.audio_cache = reuse, AudioEmbeddingCache()
    predictor.predict(frames[-1], clip, SAMPLE_RATE)  # the keyframe the first pair's frame differs from
    for index in range(pairs):
        frame = frames[index % len(frames)]
        for reusing in (True, False) if index % 2 == 0 else (False, True):
            predictor.view_reuse = reuse if reusing else None
            begun = time.perf_counter()
            predictor.predict(frame, clip, SAMPLE_RATE)
            times[reusing].append((time.perf_counter() - begun) * 1000)
            if reusing and reuse.last_reused:
                raise RuntimeError(f"moving frame {index} reused the keyframe (change {reuse.last_change:.3f})")
    on, off = statistics.median(times[True]), statistics.median(times[False])
    return f"{on:.0f} / {off:.0f} ({on / off - 1:+.1%})"


def measure(preset: str, size: int, row: str, seconds: float, rounds: int, max_ages_s: list[float],
            camera_hz: float, pairs: int) -> None:
    backend, device, precision = row.split(":")
    torch.manual_seed(0)
    model = build_model(preset, image_size=size).eval()
    with tempfile.TemporaryDirectory(prefix="avag-reuse-bench-") as folder:
        if backend == "torch":
            predictor = AffordancePredictor.from_model(model, device, precision)
        else:
            export = export_onnx(model, folder)
            if precision == "int8":
                quantize_export(export, "synthetic")  # random weights: any calibration images do
            predictor = AffordancePredictor.from_checkpoint(export, device, precision, backend=backend)
        del model
        views = streams()
        runs = {(name, age): StreamRun(predictor, frames, age, camera_hz)
                for age in (None, *max_ages_s) for name, frames in views.items()}
        for _ in range(rounds):
            for run in runs.values():
                run.run(seconds / rounds)
        changed = changed_view_ms(predictor, views["moving"], pairs)
        for age in max_ages_s:
            still, moving = runs["still", age], runs["moving", age]
            print(f"| {preset} | {size} | {row} | {age:g} | {runs['still', None].rate()} | {still.rate()} | "
                  f"{runs['moving', None].rate()} | {moving.rate()} | {still.median_ms(True, True)} | "
                  f"{still.median_ms(True, False)} | {runs['still', None].median_ms()} | "
                  f"{changed} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["avagformer_b0", "avagformer_b5"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--row", default=fastest_cpu_row(), help="BACKEND:DEVICE:PRECISION")
    parser.add_argument("--seconds", type=float, default=12.0, help="how long each stream runs, in all")
    parser.add_argument("--rounds", type=int, default=4, help="segments each stream's time is cut into")
    parser.add_argument("--max-age-s", type=float, nargs="+", default=[spec("reuse.max_age_s").default],
                        help="reuse.max_age_s values, each a pair of reuse streams (default: the node's)")
    parser.add_argument("--camera-hz", type=float, default=30.0, help="the camera's frame rate")
    parser.add_argument("--pairs", type=int, default=12, help="changed-view frames timed with reuse on and off")
    args = parser.parse_args(argv)
    fingerprint_figures()
    print(f"masks per second, 640x480 stream at {args.camera_hz:g} Hz, {args.seconds:g} s each in {args.rounds} "
          f"turns, {torch.get_num_threads()} torch threads")
    print("| preset | px | row | max_age_s | still, no reuse | still, reuse | moving, no reuse | moving, reuse | "
          "reused ms, same sound | reused ms, new sound | full ms | changed ms, reuse on / off (paired) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        measure(preset, args.size, args.row, args.seconds, args.rounds, args.max_age_s, args.camera_hz, args.pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
