"""Does AVAGFormer learn that the sound decides the target? Train briefly on the synthetic task, then score the
held-out synthetic val split three ways: with the true sound, with silence, and with another category's sound.

    python bench/learnability.py [--work runs/learnability] [--steps 900] [--size 128] [--samples 2000]

Reuses the data, index and checkpoint already in --work (delete it to start over). CPU friendly: the
avagformer_b0 preset, small images, random initialisation (no pretrained weights are available offline).
Goal: mIoU_f >= 90 with the true sound, and at least 30 points lower with the wrong sound.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from avag_core import AffordancePredictor
from avag_core.audio import audio_to_model_input
from avag_core.data import AffordanceDataset, read_index
from avag_core.data.dataset import load_log_mel
from avag_core.evaluation import score_model

REPO = Path(__file__).resolve().parents[1]


class ReplacedSound(Dataset):
    """The val split with every clip replaced: by silence, or by a clip of a different category."""

    def __init__(self, dataset: AffordanceDataset, mode: str, seed: int = 0) -> None:
        self.dataset, self.mode = dataset, mode
        self.rows = dataset.rows
        rng = np.random.default_rng(seed)
        if mode == "other":
            self.replacement = []
            for row in self.rows:
                others = [r for r in self.rows if r.audio.parent != row.audio.parent]
                self.replacement.append(others[rng.integers(len(others))])
        self.silence = audio_to_model_input(np.zeros(16000, np.float32), 16000, dataset.num_windows)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset[index]
        sample["log_mel"] = (self.silence if self.mode == "silence"
                             else load_log_mel(self.replacement[index], self.dataset.num_windows))
        return sample


def run(script: str, *args) -> None:
    command = [sys.executable, str(REPO / "training" / script), *map(str, args)]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "learnability")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data, index, run_dir = args.work / "data", args.work / "index", args.work / "run"
    if not (data / "splits.json").is_file():
        run("make_synthetic.py", "--out", data, "--num", args.samples, "--seed", args.seed, "--size", args.size)
    if not (index / "val.csv").is_file():
        run("prepare_dataset.py", "--root", data, "--out", index, "--pairs-per-image", 4)
    checkpoint = run_dir / "last.pt"
    if not checkpoint.is_file():
        started = time.time()
        run("train.py", "--config", REPO / "training" / "configs" / "synthetic_b0.yaml", "--data", index,
            "--out-dir", run_dir, "--image-size", args.size, "--batch-size", args.batch_size, "--lr", args.lr,
            "--max-steps", args.steps, "--epochs", 1000, "--seed", args.seed)
        print(f"trained {args.steps} steps in {(time.time() - started) / 60:.1f} min", flush=True)

    predictor = AffordancePredictor.from_checkpoint(checkpoint, device="auto")
    config = predictor.config
    val = AffordanceDataset(read_index(index / "val.csv"), config.image_size, config.num_audio_windows, train=False)
    print(f"\nsynthetic val split: {len(val)} pairs; avagformer_b0 at {config.image_size}px, {args.steps} steps")
    print("| sound | mIoU_f | F_f | mIoU_d | F_d |")
    print("|---|---|---|---|---|")
    results = {}
    for label, dataset in (("true", val), ("silence", ReplacedSound(val, "silence")),
                           ("other category", ReplacedSound(val, "other", args.seed))):
        loader = DataLoader(dataset, batch_size=16, num_workers=1)
        torch.manual_seed(0)
        result = score_model(predictor.model, loader, predictor.device).result()
        results[label] = result
        print(f"| {label} | {result['mIoU_f']:.2f} | {result['F_f']:.2f} | {result['mIoU_d']:.2f} "
              f"| {result['F_d']:.2f} |", flush=True)
    drop = results["true"]["mIoU_f"] - results["other category"]["mIoU_f"]
    print(f"\nmIoU_f drop with another category's sound: {drop:.2f} points "
          f"(goal: true >= 90 and drop >= 30)")


if __name__ == "__main__":
    main()
