"""Inference speed per backend, side by side: preset x image size x backend, on the same inputs.

    python bench/inference.py [--presets avagformer_b0 avagformer_b5] [--sizes 256 512]
        [--rows torch:cpu:fp32 onnxruntime:cpu:fp32 openvino:cpu:fp32] [--repeats 5]

A row is BACKEND:DEVICE:PRECISION, e.g. torch:cuda:bf16 or onnxruntime:cuda:fp16 (TensorRT) on a GPU machine.
Columns, each the median of `repeats` calls after a warm-up:
- total: `AffordancePredictor.predict` on a 640x480 image and a 4.4 s clip (the AVAGD median: 5 real windows of
  the 20), with the audio cache emptied before each call, so every window is embedded as on a stream's first
  frame. It includes the resize, the log-mel front-end and the masks at 640x480: the same code on every backend.
- image: the image side (backbone, deformable encoder, FPN); audio: the audio encoder on the clip's 6 distinct
  windows (5 real and the padding window); head: everything after, for one sound.
- peak RSS: each row runs in its own process. The exported backends load graphs exported beforehand from the
  same seed-0 weights and never build the PyTorch model; int8 rows load graphs quantized beforehand with the
  synthetic calibration set (random weights: for speed, not accuracy, which bench/precision.py measures).
- ratio: total over the first row's total for the same preset and size (put torch eager first).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from avag_core import AffordancePredictor, build_model
from avag_core.inference.export import export_onnx
from avag_core.inference.predictor import AudioEmbeddingCache
from avag_core.inference.quantize import quantize_export
from timing import median_ms

CLIP_SECONDS = 4.4
IMAGE_SHAPE = (480, 640, 3)
DEFAULT_ROWS = ["torch:cpu:fp32", "onnxruntime:cpu:fp32", "openvino:cpu:fp32", "openvino:cpu:bf16",
                "openvino:cpu:int8"]


def peak_rss_mb() -> float:
    """This process's peak resident memory. Not ru_maxrss: Linux carries that over from the parent across exec,
    and the parent has exported b5."""
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def random_model(preset: str, size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(preset, image_size=size).eval()


def measure(preset: str, size: int, row: str, folder: str, repeats: int) -> dict:
    backend, device, precision = row.split(":")
    if backend == "torch":
        predictor = AffordancePredictor.from_model(random_model(preset, size), device, precision)
    else:
        predictor = AffordancePredictor.from_checkpoint(folder, device, precision, backend=backend)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, IMAGE_SHAPE, dtype=np.uint8)
    clip = (rng.standard_normal(int(CLIP_SECONDS * 16000)) * 0.1).astype(np.float32)
    parts = predictor.backend
    sync = predictor.device
    with torch.inference_mode():
        pixels = predictor.prepare_image(image)
        windows = predictor.prepare_audio(clip, 16000)
        distinct = torch.unique(windows, dim=0)
        visual = parts.encode_image(pixels)
        embeddings = parts.embed_audio(windows)

        def predict_cold() -> None:
            predictor.audio_cache = AudioEmbeddingCache()
            predictor.predict(image, clip, 16000)

        result = {
            "total": median_ms(predict_cold, repeats, sync),
            "image": median_ms(lambda: parts.encode_image(pixels), repeats, sync),
            "audio": median_ms(lambda: parts.embed_audio(distinct), repeats, sync),
            "head": median_ms(lambda: parts.decode(visual, embeddings[None]), repeats, sync),
        }
    result["distinct_windows"] = len(distinct)
    result["peak_rss_mb"] = peak_rss_mb()
    result["runs_on"] = parts.description + (f", {torch.get_num_threads()} threads" if backend == "torch" else "")
    if sync.type == "cuda":
        result["runs_on"] += f", {torch.cuda.get_device_name(sync)}"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["avagformer_b0", "avagformer_b5"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, help="BACKEND:DEVICE:PRECISION, torch first")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--one", nargs=4, metavar=("PRESET", "SIZE", "ROW", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        preset, size, row, folder = args.one
        print(json.dumps(measure(preset, int(size), row, folder, args.repeats)))
        return
    print("| preset | size | backend | device | precision | total ms | ratio | image ms | audio ms | head ms "
          "| peak RSS MB | runs on |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    with tempfile.TemporaryDirectory(prefix="avag-bench-") as scratch:
        for preset in args.presets:
            for size in args.sizes:
                folder = Path(scratch) / f"{preset}-{size}"
                if any(not row.startswith("torch:") for row in args.rows):
                    export_onnx(random_model(preset, size), folder)
                if any(row.endswith(":int8") for row in args.rows):
                    quantize_export(folder, "synthetic")
                baseline = None
                for row in args.rows:
                    command = [sys.executable, __file__, "--repeats", str(args.repeats),
                               "--one", preset, str(size), row, str(folder)]
                    done = subprocess.run(command, capture_output=True, text=True)
                    if done.returncode:
                        print(f"| {preset} | {size} | {row} | failed: {done.stderr.strip().splitlines()[-1]} |")
                        continue
                    result = json.loads(done.stdout.splitlines()[-1])
                    baseline = baseline or result["total"]
                    backend, device, precision = row.split(":")
                    results.append({"preset": preset, "size": size, "backend": backend, "device": device,
                                    "precision": precision, "ratio": result["total"] / baseline, **result})
                    print(f"| {preset} | {size} | {backend} | {device} | {precision} | {result['total']:.0f} "
                          f"| {result['total'] / baseline:.2f} | {result['image']:.0f} | {result['audio']:.0f} "
                          f"| {result['head']:.0f} | {result['peak_rss_mb']:.0f} | {result['runs_on']} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
