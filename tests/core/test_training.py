"""Smoke tests of the training and evaluation scripts on a tiny synthetic dataset (real files, real loops)."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from avag_core.checkpoints.weights import load_checkpoint

from conftest import REPO, call_script, run_script

TRAIN_ARGS = ("--model", "avagformer_b0", "--image-size", "64", "--batch-size", "4", "--num-workers", "0",
              "--freeze-backbone-epochs", "1", "--lr", "1e-3", "--log-every", "1")


def read_metrics(out_dir):
    with open(out_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # a training run
def test_training_reduces_the_loss_and_evaluates_to_finite_numbers(synthetic_index, tmp_path):
    # Overfit one fixed batch: the batch loss must fall. Four epochs on the same 4 samples, backbone unfrozen
    # from epoch 1 on, so the freeze schedule runs too.
    rows = list(csv.DictReader(open(synthetic_index / "train.csv")))[:4]
    small = tmp_path / "index"
    small.mkdir()
    for split in ("train", "val"):
        with open(small / f"{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=rows[0].keys())
            writer.writeheader()
            for row in rows:
                writer.writerow({k: str((synthetic_index / v).resolve()) if v else "" for k, v in row.items()})
    out = tmp_path / "run"
    result = run_script("train.py", "--data", small, "--out-dir", out, "--epochs", "6", "--seed", "0",
                        "--augment", "false", *TRAIN_ARGS)  # a fixed batch: no augmentation
    assert result.returncode == 0, result.stderr
    losses = [float(r["train_loss"]) for r in read_metrics(out)]
    assert len(losses) == 6 and losses[-1] < losses[0] * 0.97
    last = read_metrics(out)[-1]
    assert all(np.isfinite(float(last[k])) for k in ("mIoU_f", "F_f"))
    assert (out / "tensorboard").is_dir() and (out / "best.pt").is_file()
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 5 and state["step"] == 6 and set(state) >= {"optimizer", "scaler", "rng", "train_config"}


@pytest.mark.slow  # a training run
def test_resume_continues_from_the_last_checkpoint(synthetic_index, tmp_path):
    out = tmp_path / "run"
    first = run_script("train.py", "--data", synthetic_index, "--out-dir", out, "--epochs", "1", "--max-steps", "2",
                       *TRAIN_ARGS)
    assert first.returncode == 0, first.stderr
    assert load_checkpoint(out / "last.pt")["step"] == 2
    second = run_script("train.py", "--data", synthetic_index, "--out-dir", out, "--epochs", "2", "--max-steps", "4",
                        "--resume", "true", *TRAIN_ARGS)
    assert second.returncode == 0, second.stderr
    assert "resumed from" in second.stdout
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 1 and state["step"] == 4
    assert [r["epoch"] for r in read_metrics(out)] == ["0", "1"]


def test_bad_training_config_is_rejected(tmp_path):
    # checked as the arguments are read: the index folder is never opened, so none is made
    result = call_script("train.py", "--data", tmp_path / "index", "--out-dir", tmp_path, "--precision", "fp8")
    assert result.returncode != 0 and "precision" in result.stderr
    config = tmp_path / "bad.yaml"
    config.write_text("learning_rate: 0.1\n")
    result = call_script("train.py", "--config", config)
    assert result.returncode != 0 and "unknown keys" in result.stderr


@pytest.mark.slow  # a training run before the two evaluations
def test_evaluate_checkpoint_writes_table_json_and_masks(synthetic_index, tmp_path):
    out = tmp_path / "run"
    assert run_script("train.py", "--data", synthetic_index, "--out-dir", out, "--epochs", "1", "--max-steps", "1",
                      *TRAIN_ARGS).returncode == 0
    for split, extra in (("seen", []), ("unseen", ["--original-size"])):
        result = run_script("evaluate.py", "--checkpoint", out / "last.pt", "--data", synthetic_index, "--split",
                            split, "--json", tmp_path / f"{split}.json", "--save-masks", tmp_path / split,
                            "--device", "cpu", "--num-workers", "0", *extra)
        assert result.returncode == 0, result.stderr
        assert "| mIoU_f | F_f | mIoU_d | F_d |" in result.stdout
        # Not a terminal: one progress line at the end of a short run, no redrawn bar
        assert result.stderr.count(f"evaluating {split}:") == 1 and "\r" not in result.stderr, result.stderr
        scores = json.loads((tmp_path / f"{split}.json").read_text())
        assert set(scores) >= {"mIoU_f", "F_f", "mIoU_d", "F_d"} and 0 <= scores["mIoU_f"] <= 100
        assert (tmp_path / split / "overlay_grid.png").is_file()
        assert len(list((tmp_path / split).glob("*_function.png"))) == scores["samples_f"]


def write_png(path, array):
    import cv2
    cv2.imwrite(str(path), array)


def test_evaluate_prediction_folders(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    function = np.zeros((10, 12), np.uint8)
    function[2:5, 3:7] = 255
    write_png(gt / "a_Function_mask.png", function)
    write_png(gt / "a_Dependency_mask.png", np.zeros((10, 12), np.uint8))
    write_png(gt / "b_Function_mask.png", function)  # no dependency file: empty
    write_png(pred / "a_function.png", function)  # perfect, 8-bit
    write_png(pred / "a_dependency.png", np.zeros((10, 12), np.uint8))
    np.save(pred / "b_function.npy", np.zeros((10, 12), np.float32))  # all-zero, float
    write_png(pred / "b_dependency.png", np.zeros((10, 12), np.uint16))  # 16-bit
    result = call_script("evaluate.py", "--predictions", pred, "--ground-truth", gt, "--json", tmp_path / "s.json")
    assert result.returncode == 0, result.stderr
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["mIoU_f"] == pytest.approx(50.0) and scores["samples_d"] == 0 and scores["samples_f"] == 2
    # Unmatched names and size mismatches end with a clear message and a non-zero exit.
    np.save(pred / "c_function.npy", np.zeros((10, 12), np.float32))
    result = call_script("evaluate.py", "--predictions", pred, "--ground-truth", gt)
    assert result.returncode == 2 and "unmatched names" in result.stderr
    (pred / "c_function.npy").unlink()
    write_png(pred / "a_function.png", np.zeros((5, 5), np.uint8))
    result = call_script("evaluate.py", "--predictions", pred, "--ground-truth", gt)
    assert result.returncode == 2 and "5x5 but its ground truth is 12x10" in result.stderr


@pytest.mark.slow  # a training run
def test_distributed_training_with_torchrun_on_cpu(synthetic_index, tmp_path):
    """Two processes, gloo backend: DistributedSampler, DDP and metrics summed over ranks."""
    out = tmp_path / "ddp"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(REPO / "training" / "train.py"), "--data", synthetic_index, "--out-dir", out,
                             "--epochs", "1", "--max-steps", "2", *TRAIN_ARGS],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 2 and len(state["rng"]) == 2  # one RNG state per rank
    val_rows = sum(1 for _ in open(synthetic_index / "val.csv")) - 1
    assert state["val"]["samples_f"] == val_rows  # every val sample scored once across the two ranks


@pytest.mark.slow  # a training run, with VGGish
def test_paper_config_loads_official_pretrained_files(synthetic_index, tmp_path):
    """training/configs/avagd_b5.yaml with files in the official layouts (PVT-v2 release, torchvggish): the run
    starts from them, keeps VGGish frozen and the backbone frozen in its first epoch."""
    from avag_core.modeling.backbone import PVTBackbone
    from test_weights import to_official_pvt_names, torchvggish_state

    torch.manual_seed(3)
    pvt_state = to_official_pvt_names(PVTBackbone("pvt_v2_b0", 0.0).body.state_dict())
    torch.save(pvt_state, tmp_path / "pvt_v2_b0.pth")
    vggish_state = torchvggish_state()
    torch.save(vggish_state, tmp_path / "vggish-10086976.pth")
    out = tmp_path / "run"
    result = run_script("train.py", "--config", REPO / "training" / "configs" / "avagd_b5.yaml",
                        "--model", "avagformer_b0", "--data", synthetic_index, "--out-dir", out,
                        "--backbone-weights", tmp_path / "pvt_v2_b0.pth",
                        "--vggish-weights", tmp_path / "vggish-10086976.pth",
                        "--image-size", "64", "--batch-size", "4", "--num-workers", "0", "--max-steps", "1")
    assert result.returncode == 0, result.stderr
    state = load_checkpoint(out / "last.pt")
    assert state["config"]["audio_encoder"] == "vggish" and state["config"]["freeze_audio_encoder"]
    assert state["config"]["foreground_prior"] is None and state["train_config"]["final_lr_scale"] == 1.0
    weights = state["model"]
    assert torch.equal(weights["backbone.body.stages.3.norm.weight"], pvt_state["norm4.weight"])
    assert torch.equal(weights["backbone.body.patch_embed.proj.weight"], pvt_state["patch_embed1.proj.weight"])
    for key in ("features.0.weight", "embeddings.4.bias"):
        assert torch.equal(weights[f"audio_encoder.{key}"], vggish_state[key])


@pytest.mark.slow  # a training run
def test_from_scratch_defaults_train_the_light_audio_encoder(synthetic_index, tmp_path):
    out = tmp_path / "run"
    result = run_script("train.py", "--data", synthetic_index, "--out-dir", out, "--epochs", "1", "--max-steps",
                        "2", *TRAIN_ARGS)
    assert result.returncode == 0, result.stderr
    state = load_checkpoint(out / "last.pt")
    assert state["config"]["audio_encoder"] == "log_mel_cnn" and not state["config"]["freeze_audio_encoder"]
    groups = state["optimizer"]["param_groups"]
    assert [g["lr_scale"] for g in groups] == [1.0, 10.0] and groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])
    result = run_script("train.py", "--data", synthetic_index, "--out-dir", out, "--audio-encoder", "log_mel_cnn",
                        "--vggish-weights", tmp_path / "vggish.pth")
    assert result.returncode != 0 and "vggish_weights is given but audio_encoder is log_mel_cnn" in result.stderr
