"""The command line of `python -m avag_core.export`: its help is the export's own description
(avag_core.inference.export)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..checkpoints.build import build_model, load_model
from ..checkpoints.weights import file_digest
from ..config import PRESETS
from ..inference import export as onnx_export
from ..inference.export import DEFAULT_OPSET, export_onnx
from ..inference.quantize import calibration_files, quantize_export


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m avag_core.export", description=onnx_export.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="trained AVAGFormer checkpoint (.pt)")
    source.add_argument("--model", choices=sorted(PRESETS), help="preset with RANDOM weights (benchmarks only)")
    parser.add_argument("--out", required=True, help="export folder (created if missing)")
    parser.add_argument("--image-size", type=int, help="input size baked into the graphs (default: the model's)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--threshold", type=float, default=0.5, help="mask threshold recorded in the manifest")
    parser.add_argument("--quantize", choices=["int8"], help="also write INT8 graphs for the openvino backend")
    parser.add_argument("--calibration", help="with --quantize: a folder of images and clips like the robot's, or "
                                              "'synthetic' (weights trained on the synthetic task only)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.quantize) != bool(args.calibration):
        parser.error("--quantize and --calibration go together")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.quantize and args.calibration != "synthetic":
            calibration_files(args.calibration)  # before the export, not after it
        overrides = {"image_size": args.image_size} if args.image_size else {}
        if args.checkpoint:
            model = load_model(args.checkpoint, **overrides)
            source = {"checkpoint": str(Path(args.checkpoint).resolve()), "sha256": file_digest(args.checkpoint)}
        else:
            model = build_model(args.model, **overrides)
            source = {"preset": args.model, "weights": "random"}
        if args.opset < 17:
            raise ValueError(f"opset {args.opset} is too old: the graphs need opset 17 or newer")
        folder = export_onnx(model, args.out, opset=args.opset, threshold=args.threshold, source=source)
        if args.quantize:
            quantize_export(folder, args.calibration)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    weights = {".onnx": lambda p: p.with_name(p.name + ".data"), ".xml": lambda p: p.with_suffix(".bin")}
    sizes = {p.name: (p.stat().st_size + weights[p.suffix](p).stat().st_size) / 2**20
             for p in sorted([*folder.glob("*.onnx"), *folder.glob("*.xml")])}
    print(f"wrote {folder}: " + ", ".join(f"{name} ({mib:.1f} MiB)" for name, mib in sizes.items()))
    return 0

