"""Score AVAGFormer (or anyone's predictions) under the released evaluation protocol.

    python training/evaluate.py --checkpoint C --data INDEX_DIR --split seen|unseen [--original-size]
                                [--json FILE] [--save-masks DIR]
    python training/evaluate.py --predictions PRED_DIR --ground-truth GT_DIR [--json FILE]

Protocol (spec section 10): IoU at probability > 0.5, and an empty ground truth scores the fraction of pixels
left empty; F-measure with beta^2 = 0.3, each image's best of 255 thresholds, 0 for an empty ground truth;
function metrics over all samples, dependency metrics only over samples with a non-empty dependency mask. By
default masks are compared at the model's input size, as the released code does; `--original-size` resizes the
predictions to each image's own size instead. Every sample counts (the released script's drop_last is not
reproduced). Seen = INDEX_DIR/val.csv, unseen = INDEX_DIR/unseen.csv.

Prediction folders hold `<name>_function.png` and `<name>_dependency.png` (8- or 16-bit probability maps) or
`<name>_function.npy` / `<name>_dependency.npy` (float in [0, 1]); ground-truth folders hold the AVAGD-style
`<name>_Function_mask.png` and `<name>_Dependency_mask.png`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from avag_core import AffordancePredictor
from avag_core.data import AffordanceDataset, read_index
from avag_core.data.avagd import DEPENDENCY_SUFFIX, FUNCTION_SUFFIX
from avag_core.data.dataset import load_mask
from avag_core.image import load_image, overlay, save_png
from avag_core.training.evaluation import score_model
from avag_core.training.metrics import AffordanceScores
from avag_core.training.progress import progress

SPLIT_FILES = {"seen": "val.csv", "unseen": "unseen.csv"}


def table_row(label: str, result: dict) -> str:
    return (f"| {label} | {result['mIoU_f']:.2f} | {result['F_f']:.2f} | {result['mIoU_d']:.2f} "
            f"| {result['F_d']:.2f} | {result['samples_f']} | {result['samples_d']} |")


def print_table(label: str, result: dict) -> None:
    print("| split | mIoU_f | F_f | mIoU_d | F_d | samples_f | samples_d |")
    print("|---|---|---|---|---|---|---|")
    print(table_row(label, result))


class MaskWriter:
    """Saves probability maps as 16-bit PNGs and an overlay grid of the first samples."""

    def __init__(self, folder: Path, dataset: AffordanceDataset, grid_samples: int = 16) -> None:
        self.folder, self.dataset, self.grid_samples = folder, dataset, grid_samples
        folder.mkdir(parents=True, exist_ok=True)
        self.tiles: list[np.ndarray] = []

    def __call__(self, name: str, function_prob: torch.Tensor, dependency_prob: torch.Tensor) -> None:
        for suffix, prob in (("function", function_prob), ("dependency", dependency_prob)):
            save_png(self.folder / f"{name}_{suffix}.png", (prob.numpy() * 65535).round().astype(np.uint16))
        if len(self.tiles) < self.grid_samples:
            image = self.dataset.rows[len(self.tiles)].image  # samples arrive in dataset order
            rgb = cv2.resize(load_image(image), function_prob.shape[::-1])
            self.tiles.append(overlay(rgb, function_prob.numpy() > 0.5, dependency_prob.numpy() > 0.5))

    def write_grid(self) -> None:
        if not self.tiles:
            return
        size = 256
        tiles = [cv2.resize(t, (size, size)) for t in self.tiles]
        columns = 4
        tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
        rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
        save_png(self.folder / "overlay_grid.png", np.concatenate(rows, axis=0))


def load_probability(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        prob = np.load(path, allow_pickle=False).astype(np.float32)
    else:
        raw = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.ndim != 2:
            raise ValueError(f"{path}: not a single-channel probability image")
        prob = raw.astype(np.float32) / (65535.0 if raw.dtype == np.uint16 else 255.0)
    if prob.ndim != 2 or not np.isfinite(prob).all() or prob.min() < 0 or prob.max() > 1:
        raise ValueError(f"{path}: probabilities must be a finite HxW map in [0, 1]")
    return prob


def find_prediction(folder: Path, name: str, task: str) -> Path | None:
    for suffix in (".png", ".npy"):
        path = folder / f"{name}_{task}{suffix}"
        if path.is_file():
            return path
    return None


def score_folders(predictions: Path, ground_truth: Path) -> AffordanceScores:
    names = sorted(p.name[:-len(FUNCTION_SUFFIX)] for p in ground_truth.glob(f"*{FUNCTION_SUFFIX}"))
    if not names:
        raise ValueError(f"no *{FUNCTION_SUFFIX} files in {ground_truth}")
    predicted = {p.stem.rsplit("_", 1)[0] for p in predictions.glob("*_function.*")}
    missing = [n for n in names if find_prediction(predictions, n, "function") is None
               or find_prediction(predictions, n, "dependency") is None]
    extra = sorted(predicted - set(names))
    if missing or extra:
        raise ValueError(f"unmatched names: {len(missing)} ground truths without both predictions "
                         f"(e.g. {missing[:3]}), {len(extra)} predictions without ground truth (e.g. {extra[:3]})")
    scores = AffordanceScores()
    for name in names:
        function_gt = load_mask(ground_truth / f"{name}{FUNCTION_SUFFIX}")
        dependency_path = ground_truth / f"{name}{DEPENDENCY_SUFFIX}"
        dependency_gt = load_mask(dependency_path if dependency_path.is_file() else None, function_gt.shape)
        function_prob = load_probability(find_prediction(predictions, name, "function"))
        dependency_prob = load_probability(find_prediction(predictions, name, "dependency"))
        for prob, gt, task in ((function_prob, function_gt, "function"), (dependency_prob, dependency_gt,
                                                                          "dependency")):
            if prob.shape != gt.shape:
                raise ValueError(f"{name}: {task} prediction is {prob.shape[1]}x{prob.shape[0]} but its ground "
                                 f"truth is {gt.shape[1]}x{gt.shape[0]}")
        scores.add(name, torch.from_numpy(function_prob), torch.from_numpy(function_gt).float(),
                   torch.from_numpy(dependency_prob), torch.from_numpy(dependency_gt).float())
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--data", type=Path, help="index folder from training/prepare_dataset.py")
    parser.add_argument("--split", choices=sorted(SPLIT_FILES), default="seen")
    parser.add_argument("--original-size", action="store_true")
    parser.add_argument("--predictions", type=Path)
    parser.add_argument("--ground-truth", type=Path)
    parser.add_argument("--json", type=Path, help="write mIoU_f, F_f, mIoU_d, F_d (percent) and counts here")
    parser.add_argument("--save-masks", type=Path, help="write probability maps and an overlay grid here")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args(argv)
    model_mode = args.checkpoint is not None or args.data is not None
    folder_mode = args.predictions is not None or args.ground_truth is not None
    if model_mode == folder_mode or (model_mode and not (args.checkpoint and args.data)) or \
            (folder_mode and not (args.predictions and args.ground_truth)):
        parser.error("give either --checkpoint and --data, or --predictions and --ground-truth")
    try:
        if folder_mode:
            for folder in (args.predictions, args.ground_truth):
                if not folder.is_dir():
                    raise ValueError(f"folder not found: {folder}")
            scores, label = score_folders(args.predictions, args.ground_truth), args.predictions.name
        else:
            predictor = AffordancePredictor.from_checkpoint(args.checkpoint, args.device, args.precision)
            dataset = AffordanceDataset(read_index(args.data / SPLIT_FILES[args.split]),
                                        predictor.config.image_size, predictor.config.num_audio_windows,
                                        augment=False)
            loader = DataLoader(dataset, args.batch_size, num_workers=args.num_workers)
            sink = MaskWriter(args.save_masks, dataset) if args.save_masks else None
            scores = score_model(predictor.backend.model, loader, predictor.device, args.precision, args.original_size,
                                 sink, progress=lambda it: progress(it, f"evaluating {args.split}"))
            if sink:
                sink.write_grid()
            label = args.split
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = scores.result()
    print_table(label, result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
