"""Index an AVAGD-layout dataset for training: split, pair, and cache each clip's log-mel once.

    python training/prepare_dataset.py --root ROOT --out INDEX_DIR [--seed 0] [--pairs-per-image 0]

- Splits (the paper's Table 12, or ROOT/splits.json): seen categories are split 80/20 into train and val per
  category, images and clips separately, by a seeded hash of the file stem; unseen categories go whole to
  `unseen`.
- Pairing: every image is paired with every clip of its category in the same split (the cross product, the
  most plausible reading of the paper's 418K training pairs); `--pairs-per-image K` keeps K clips per image,
  chosen round-robin.
- Each clip is decoded once into INDEX_DIR/log_mel/*.pt ([n, 1, 96, 64] examples), so training never decodes mp3.
- Unreadable files and categories in neither list are reported and skipped. Rerunning reuses the cache and
  rewrites the same index.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from avag_core.audio import load_audio, waveform_to_examples
from avag_core.data.avagd import CategoryFolder, IndexRow, category_splits, scan_release, write_index


def split_train_val(paths: list[Path], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of train and val: round(fraction * n) items (at least one when n >= 2) go to val.

    Items are ranked by a seeded hash of their file stem, so a picture stored under several categories (as in
    the synthetic task) lands on the same side of the split in each of them.
    """
    order = sorted(range(len(paths)), key=lambda i: hashlib.sha1(f"{seed}:{paths[i].stem}".encode()).digest())
    count = 0 if len(paths) < 2 else max(1, round(fraction * len(paths)))
    return sorted(order[count:]), sorted(order[:count])


def cache_name(clip: Path, root: Path) -> str:
    stat = clip.stat()
    key = f"{clip.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha1(key.encode()).hexdigest()[:20] + ".pt"


def cache_clip(job: tuple[Path, Path]) -> str | None:
    """Decode one clip into its cache file; returns an error message instead of raising."""
    clip, target = job
    if target.is_file():
        return None
    try:
        waveform, rate = load_audio(clip)
        examples = waveform_to_examples(waveform, rate)
    except ValueError as error:
        return str(error)
    tmp = target.with_suffix(".tmp")
    torch.save(examples, tmp)
    tmp.replace(target)
    return None


def image_readable(path: Path) -> bool:
    data = np.fromfile(path, np.uint8)
    return data.size > 0 and cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8) is not None


def pair(images, clips, cache: dict[Path, Path], pairs_per_image: int) -> list[IndexRow]:
    rows = []
    for i, record in enumerate(images):
        chosen = clips if pairs_per_image <= 0 else [clips[(i + k) % len(clips)]
                                                     for k in range(min(pairs_per_image, len(clips)))]
        rows += [IndexRow(record.image, clip, record.function_mask, record.dependency_mask, cache[clip])
                 for clip in chosen]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--pairs-per-image", type=int, default=0, help="0: every clip of the category")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: dataset root not found: {args.root}", file=sys.stderr)
        return 2
    seen, unseen = category_splits(args.root)
    cache_dir = args.out / "log_mel"
    cache_dir.mkdir(parents=True, exist_ok=True)

    problems: list[str] = []
    splits: dict[str, list[tuple[CategoryFolder, list, list]]] = {"train": [], "val": [], "unseen": []}
    for category in scan_release(args.root):
        problems += category.problems
        unreadable = [r for r in category.images if not image_readable(r.image)]
        problems += [f"{r.image}: unreadable image" for r in unreadable]
        category.images = [r for r in category.images if r not in unreadable]
        if category.name in seen:
            train_images, val_images = split_train_val([r.image for r in category.images], args.val_fraction,
                                                       args.seed)
            train_clips, val_clips = split_train_val(category.clips, args.val_fraction, args.seed)
            splits["train"].append((category, [category.images[i] for i in train_images],
                                    [category.clips[i] for i in train_clips]))
            splits["val"].append((category, [category.images[i] for i in val_images],
                                  [category.clips[i] for i in val_clips]))
        elif category.name in unseen:
            splits["unseen"].append((category, category.images, category.clips))
        else:
            problems.append(f"{category.folder}: category '{category.name}' is in neither the seen nor the "
                            f"unseen list; skipped")

    clips = sorted({clip for entries in splits.values() for _, _, cs in entries for clip in cs})
    cache = {clip: cache_dir / cache_name(clip, args.root) for clip in clips}
    with ProcessPoolExecutor(max(1, args.workers)) as pool:
        for clip, error in zip(clips, pool.map(cache_clip, [(c, cache[c]) for c in clips], chunksize=8)):
            if error:
                problems.append(f"{clip}: {error}")
                del cache[clip]
    for stale in set(cache_dir.glob("*.pt")) - set(cache.values()):
        stale.unlink()

    summary = {}
    for split, entries in splits.items():
        rows = []
        for category, images, category_clips in entries:
            usable = [c for c in category_clips if c in cache]
            if images and not usable:
                problems.append(f"{category.folder}: no readable clip in the {split} split; its images are unused")
            rows += pair(images, usable, cache, args.pairs_per_image)
        write_index(args.out / f"{split}.csv", rows)
        summary[split] = {"pairs": len(rows), "images": len({r.image for r in rows}),
                          "clips": len({r.audio for r in rows}), "categories": len({r.image.parent for r in rows})}
    (args.out / "summary.json").write_text(json.dumps({"splits": summary, "problems": problems}, indent=2) + "\n")
    for split, counts in summary.items():
        print(f"{split:>6}: {counts['pairs']} pairs from {counts['images']} images and {counts['clips']} clips "
              f"in {counts['categories']} categories")
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
