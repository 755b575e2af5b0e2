"""Command line: segment the function and dependency regions of one image for one sound.

    python -m avag_core.predict --image IMG --audio CLIP (--checkpoint CKPT | --model PRESET) --out DIR
        [--backend torch|onnxruntime|openvino]

Writes function_mask.png and dependency_mask.png (0/255, the image's size) and overlay.png. For a file name
that starts with '-', write --audio=-name.mp3 or ./-name.mp3.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from ..audio import load_audio
from ..config import BACKENDS, PRECISION_NAMES, PRESETS
from ..image import load_image, overlay, save_png
from ..inference.predictor import AffordancePrediction, AffordancePredictor


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m avag_core.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="photo (jpg, png, ...)")
    parser.add_argument("--audio", required=True, help="action sound (wav, flac, mp3, ...)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="trained AVAGFormer checkpoint (.pt), or an export folder for the "
                                             "onnxruntime and openvino backends")
    source.add_argument("--model", choices=sorted(PRESETS), help="preset with RANDOM weights (smoke tests only)")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--backend", default="torch", choices=BACKENDS,
                        help="what runs the model (default: torch); a .pt checkpoint is exported to ONNX once")
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, cuda or cuda:N; for openvino auto, cpu or gpu (default: auto)")
    parser.add_argument("--precision", default="fp32", choices=PRECISION_NAMES)
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold for the masks")
    parser.add_argument("--image-size", type=int, help="model input size for --model (default: the preset's)")
    return parser


def write_outputs(out_dir: Path, image: np.ndarray, prediction: AffordancePrediction) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    save_png(out_dir / "function_mask.png", prediction.function_mask.astype(np.uint8) * 255)
    save_png(out_dir / "dependency_mask.png", prediction.dependency_mask.astype(np.uint8) * 255)
    save_png(out_dir / "overlay.png", overlay(image, prediction.function_mask, prediction.dependency_mask))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        image = load_image(args.image)
        waveform, sample_rate = load_audio(args.audio)
        if args.checkpoint:
            predictor = AffordancePredictor.from_checkpoint(args.checkpoint, args.device, args.precision,
                                                            args.threshold, args.backend)
        else:
            overrides = {"image_size": args.image_size} if args.image_size else {}
            predictor = AffordancePredictor.from_preset(args.model, args.device, args.precision, args.threshold,
                                                        args.backend, **overrides)
        prediction = predictor.predict(image, waveform, sample_rate)
        write_outputs(Path(args.out), image, prediction)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"function region: {100 * prediction.function_mask.mean():.2f}% of the image, "
          f"dependency region: {100 * prediction.dependency_mask.mean():.2f}%; wrote {args.out}")
    return 0

