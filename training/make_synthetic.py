"""Generate the synthetic audio-visual affordance task (see avag_core/data/synthetic.py) in the AVAGD layout.

    python training/make_synthetic.py --out DIR --num N --seed S [--size 256] [--clips-per-category 12]
"""
from __future__ import annotations

import argparse
import sys
import time

from avag_core.data.synthetic import write_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--num", type=int, required=True, help="number of (image, category) samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--clips-per-category", type=int, default=12)
    args = parser.parse_args(argv)
    started = time.time()
    try:
        summary = write_dataset(args.out, args.num, args.seed, args.size, args.clips_per_category)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {summary['samples']} samples from {summary['scenes']} scenes and {summary['clips']} clips in "
          f"{summary['categories']} categories to {args.out} in {time.time() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
