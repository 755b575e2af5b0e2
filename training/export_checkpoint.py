"""Write a training checkpoint's weights alone, for shipping: no optimiser, scaler or RNG state.

    python training/export_checkpoint.py --checkpoint runs/x/last.pt --out model.pt [--half]

`--half` stores floating-point tensors as fp16 (half the size); they load back into the fp32 model, which
rounds each weight to fp16 precision once. The config, the step, the training config and the val scores stay.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avag_core.checkpoints.weights import load_checkpoint, load_state_dict_strictly, save_checkpoint
from avag_core.config import AVAGFormerConfig
from avag_core.modeling import AVAGFormer

KEPT = ("step", "epoch", "train_config", "val")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--half", action="store_true", help="store floating-point weights as fp16")
    args = parser.parse_args(argv)
    try:
        payload = load_checkpoint(args.checkpoint)
        model = AVAGFormer(AVAGFormerConfig.from_dict(payload["config"]))
        load_state_dict_strictly(model, payload["model"], str(args.checkpoint))
    except ValueError as error:  # a missing, foreign or mismatched file
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.half:
        model.half()
    save_checkpoint(args.out, model, **{k: payload[k] for k in KEPT if k in payload})
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
