"""Convert a checkpoint trained with the authors' released AVAGFormer code into one of ours.

    python -m avag_core.convert_released --checkpoint FILE --out OUT.pt [--vggish-weights FILE] [--image-size 512]

FILE is either format the released train.py saves: the best model (a flat state_dict) or the last checkpoint
(`{'net': ..., 'optimizer': ...}`, keys prefixed `module.`). The model's config is read from the tensors; what the
released forward never uses is dropped and counted. A file saved without the frozen VGGish needs the torchvggish
release file (`--vggish-weights vggish-10086976.pth`). OUT records the source file and its SHA-256, and loads
anywhere a checkpoint of ours does (the node, the predictor, training/evaluate.py, python -m avag_core.export).
The node and the predictor also take FILE itself, converting it in memory on every load.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..checkpoints.released import RELEASED_IMAGE_SIZE, RELEASED_SOURCE, load_released
from ..checkpoints.weights import file_digest, is_checkpoint, load_file, save_checkpoint
from ..config import AVAGFormerConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m avag_core.convert_released", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help="a .pth saved by the released train.py")
    parser.add_argument("--out", required=True, type=Path, help="our checkpoint to write (.pt)")
    parser.add_argument("--vggish-weights", type=Path,
                        help="the torchvggish release file, for a checkpoint saved without the vggish.* tensors")
    parser.add_argument("--image-size", type=int, default=RELEASED_IMAGE_SIZE,
                        help=f"input size the model runs at (default {RELEASED_IMAGE_SIZE}, the paper's)")
    return parser


def not_released_reason(payload: object, path: Path) -> str:
    """Why a readable torch file is not a released AVAGFormer checkpoint, as specifically as it can be told."""
    if is_checkpoint(payload):
        return f"{path} is already an avag_ros AVAGFormer checkpoint: it needs no conversion"
    keys = list(payload.get("net", payload)) if isinstance(payload, dict) else []
    if any(str(k).startswith(("patch_embed1.", "block1.")) for k in keys):
        return f"{path} is a PVT-v2 backbone file, not an AVAGFormer checkpoint (pass it as backbone_weights)"
    if any(str(k).startswith("features.") for k in keys) and any(str(k).startswith("embeddings.") for k in keys):
        return f"{path} is a VGGish file, not an AVAGFormer checkpoint (pass it as --vggish-weights)"
    return f"{path} is not a checkpoint of the released AVAGFormer code (no backbone.*, head.* tensors)"


def describe(config: AVAGFormerConfig) -> str:
    defaults = AVAGFormerConfig().to_dict()
    fields = config.to_dict()
    return ", ".join(f"{k}={v}" for k, v in fields.items() if k in ("backbone", "image_size") or v != defaults[k]) \
        or "the paper's"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        payload = load_file(args.checkpoint)
        released = load_released(payload, args.checkpoint, args.vggish_weights, image_size=args.image_size)
        if released is None:
            raise ValueError(not_released_reason(payload, args.checkpoint))
        model, weights = released
        source = {"kind": RELEASED_SOURCE, "file": str(args.checkpoint.resolve()),
                  "sha256": file_digest(args.checkpoint), "dropped": weights.dropped}
        if weights.vggish_file:
            source["vggish_weights"] = {"file": str(weights.vggish_file.resolve()),
                                        "sha256": file_digest(weights.vggish_file)}
        elif args.vggish_weights:
            print(f"note: {args.checkpoint} holds its own vggish.* tensors; --vggish-weights is not used")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    save_checkpoint(args.out, model, source=source)
    print(f"config inferred from the tensors: {describe(weights.config)}")
    print(weights.summary())
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - started:.1f} s")
    return 0

