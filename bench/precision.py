"""Accuracy of low precision: fp32, bf16 and int8 side by side on the same weights and the same pairs.

    python bench/precision.py [--checkpoint CKPT] [--pairs 300] [--seed 2] [--calibration synthetic] [--json FILE]

The checkpoint (default: the demo's) is exported once and quantized with `--calibration` (its seed is
avag_core.inference.quantize.CALIBRATION_SEED, 1), then scored on `--pairs` synthetic pairs drawn with `--seed` (2: not
the calibration's) under the released protocol, on every row: torch eager fp32 (the reference), openvino fp32,
bf16 (where the CPU has it) and int8. Printed per row: mIoU_f, mIoU_d, and the largest probability difference
from the reference over every pixel of every pair. Goals: bf16 within 0.5 points of fp32, int8 within 1.5.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from avag_core import AffordancePredictor
from avag_core.data.synthetic import sample_pairs
from avag_core.training.evaluation import score_predictor
from avag_ros.data import DEMO_CHECKPOINT

ROWS = (("torch", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--calibration", default="synthetic")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avag-precision-") as scratch:
        folder = Path(scratch) / "export"
        image_size = AffordancePredictor.from_checkpoint(args.checkpoint, device="cpu").config.image_size
        subprocess.run([sys.executable, "-m", "avag_core.export", "--checkpoint", str(args.checkpoint), "--out",
                        str(folder), "--quantize", "int8", "--calibration", args.calibration], check=True)
        pairs = sample_pairs(args.seed, args.pairs, size=image_size)
        rows, reference = [], None
        for backend, precision in ROWS:
            source = args.checkpoint if backend == "torch" else folder
            try:
                predictor = AffordancePredictor.from_checkpoint(source, device="cpu", precision=precision,
                                                                backend=backend)
            except ValueError as error:  # bf16 on a CPU without it
                print(f"| {backend} | {precision} | not run: {error} |")
                continue
            scores, probabilities = score_predictor(predictor, pairs)
            reference = reference or probabilities
            largest = max(float(np.abs(a - b).max()) for ours, theirs in zip(probabilities, reference)
                          for a, b in zip(ours, theirs))
            result = scores.result()
            rows.append({"backend": backend, "precision": precision, "runs_on": predictor.backend.description,
                         "mIoU_f": result["mIoU_f"], "mIoU_d": result["mIoU_d"], "max_prob_diff": largest,
                         "pairs": len(pairs)})
    print("| backend | precision | runs on | mIoU_f | mIoU_d | largest probability difference from torch fp32 |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['backend']} | {row['precision']} | {row['runs_on']} | {row['mIoU_f']:.2f} | "
              f"{row['mIoU_d']:.2f} | {row['max_prob_diff']:.4f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
