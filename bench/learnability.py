"""Does AVAGFormer learn that the sound decides the target? Train from random initialisation on the synthetic
task for a fixed wall time, then score the held-out synthetic val split four ways: with the true sound, with
another category's sound, with silence, and with the first 0.5 s of the true sound (what the node has heard of a
sound 0.5 s after its onset).

    python bench/learnability.py [--minutes 30] [--out runs/learnability] [--json scores.json] [--size 128]

`--out` keeps the data, its index and the training run; `DIR/run/last.pt` is the trained checkpoint, which
`training/evaluate.py --checkpoint` and the node (`checkpoint:=`) load. Rerunning with the same `--out` reuses
what is there (delete it to start over). CPU friendly: the avagformer_b0 preset, 128 px images, the shipped
from-scratch recipe (training/configs/synthetic_b0.yaml). Goal within 30 minutes on two CPU cores:
mIoU_f >= 50 with the true sound and at least 25 points lower with another category's sound.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from avag_core import AffordancePredictor
from avag_core.audio import audio_to_model_input, load_audio
from avag_core.checkpoints.weights import load_checkpoint
from avag_core.data import AffordanceDataset, read_index
from avag_core.data.dataset import load_log_mel
from avag_core.training.evaluation import score_model

REPO = Path(__file__).resolve().parents[1]
METRICS = ("mIoU_f", "F_f", "mIoU_d", "F_d")
SHORT_S = 0.5


class ReplacedSound(Dataset):
    """The val split with every clip replaced: by silence, by a clip of a different category, or by its own first
    SHORT_S."""

    def __init__(self, dataset: AffordanceDataset, mode: str, seed: int = 0) -> None:
        self.dataset, self.mode = dataset, mode
        rows = dataset.rows
        rng = np.random.default_rng(seed)
        if mode == "other":
            self.replacement = []
            for row in rows:
                others = [r for r in rows if r.audio.parent != row.audio.parent]
                self.replacement.append(others[rng.integers(len(others))])
        self.silence = audio_to_model_input(np.zeros(16000, np.float32), 16000, dataset.num_windows)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset[index]
        if self.mode == "silence":
            sample["log_mel"] = self.silence
        elif self.mode == "short":  # what the node has heard SHORT_S after a sound's onset
            waveform, rate = load_audio(self.dataset.rows[index].audio)
            sample["log_mel"] = audio_to_model_input(waveform[:int(SHORT_S * rate)], rate, self.dataset.num_windows)
        else:
            sample["log_mel"] = load_log_mel(self.replacement[index], self.dataset.num_windows)
        return sample


def run(script: str, *args) -> None:
    command = [sys.executable, str(REPO / "training" / script), *map(str, args)]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="training wall time")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "learnability")
    parser.add_argument("--json", type=Path, help="write the scores here")
    parser.add_argument("--samples", type=int, default=2000, help="synthetic (image, object) samples to draw")
    parser.add_argument("--size", type=int, default=128, help="image size of the data and the model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data, index, run_dir = args.out / "data", args.out / "index", args.out / "run"
    if not (data / "splits.json").is_file():
        run("make_synthetic.py", "--out", data, "--num", args.samples, "--seed", args.seed, "--size", args.size)
    if not (index / "val.csv").is_file():
        # Two clips per image: an epoch of about 300 steps, so validation (and best.pt) comes every ~7 minutes.
        run("prepare_dataset.py", "--root", data, "--out", index, "--pairs-per-image", 2)
    checkpoint = run_dir / "last.pt"
    if not checkpoint.is_file():
        run("train.py", "--config", REPO / "training" / "configs" / "synthetic_b0.yaml", "--data", index,
            "--out-dir", run_dir, "--image-size", args.size, "--max-minutes", args.minutes, "--seed", args.seed)

    trained = load_checkpoint(checkpoint)
    minutes, steps = trained["train_config"]["max_minutes"], trained["step"]
    predictor = AffordancePredictor.from_checkpoint(checkpoint, device="auto")
    config = predictor.config
    val = AffordanceDataset(read_index(index / "val.csv"), config.image_size, config.num_audio_windows, augment=False)
    print(f"\nsynthetic val split: {len(val)} pairs; {config.backbone} at {config.image_size}px, "
          f"{config.audio_encoder} audio encoder, trained {steps} steps in {minutes:g} min")
    print("| sound | mIoU_f | F_f | mIoU_d | F_d |")
    print("|---|---|---|---|---|")
    results = {"minutes": minutes, "steps": steps, "image_size": config.image_size}
    for label, dataset in (("true", val), ("other", ReplacedSound(val, "other", args.seed)),
                           ("silence", ReplacedSound(val, "silence")),
                           (f"true, first {SHORT_S:g} s", ReplacedSound(val, "short"))):
        loader = DataLoader(dataset, batch_size=16, num_workers=1)
        scores = score_model(predictor.backend.model, loader, predictor.device).result()
        results[label] = {key: scores[key] for key in METRICS}
        print(f"| {label} | " + " | ".join(f"{scores[key]:.2f}" for key in METRICS) + " |", flush=True)
    drop = results["true"]["mIoU_f"] - results["other"]["mIoU_f"]
    print(f"\nmIoU_f drop with another category's sound: {drop:.2f} points (goal: true >= 50 and drop >= 25)")
    print(f"checkpoint: {checkpoint}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
