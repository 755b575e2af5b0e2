"""Train AVAGFormer. One loop, its whole configuration in one dict below.

    python training/train.py --config training/configs/avagd_b5.yaml [--key value ...]
    torchrun --nproc_per_node=8 training/train.py --config ... # DistributedDataParallel, one GPU per process

Defaults are the paper's: AdamW lr 2e-5, weight decay 0.01, 512x512, batch 24 per process, 25 epochs, auxiliary
weight 0.1, the released losses. Backbone schedule (ours, documented): frozen for the first
`freeze_backbone_epochs` epochs, then fine-tuned to the end. The released code, taken literally, fine-tunes it
for epoch 10 only (spec section 9); set freeze_backbone_epochs to the number of epochs to keep it frozen always.

Departures from the released recipe, on by default because without them the model does not learn from
scratch (docs/training-recipe.md); each can be set back:
- `audio_encoder: auto` uses the frozen VGGish when `vggish_weights` is given, else a light trainable CNN (a random
  frozen VGGish cannot tell sounds apart). `vggish` forces the released encoder.
- `foreground_prior: 0.01` starts the final mask logits at a 1% foreground probability (0: PyTorch's init).
- `final_lr_scale: 10` trains the final path (the per-task compressor and upsampler) 10x faster than the rest
  (1: one learning rate), after `warmup_steps` of linear warm-up (0: none).
And before each validation and save, `bn_recalibration_batches: 50` recomputes the BatchNorm statistics from that
many training batches (0: keep the running averages, as released), so eval mode matches the final weights.

Every epoch writes `last.pt` atomically (model, optimizer, scaler, epoch, step, RNG states, config) and keeps
`best.pt` by validation mIoU_f; `--resume true` continues from `last.pt`. Metrics go to `metrics.csv` and
TensorBoard in `out_dir`.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from torch.utils.tensorboard import SummaryWriter

from avag_core import build_model
from avag_core.checkpoints.weights import load_checkpoint, load_state_dict_strictly, save_checkpoint
from avag_core.data import AffordanceDataset, read_index
from avag_core.inference.backends import autocast_for, resolve_device
from avag_core.inference.predictor import AudioEmbeddingCache
from avag_core.training.evaluation import score_model
from avag_core.training.losses import affordance_loss
from avag_core.training.metrics import AffordanceScores
from avag_core.training.optim import parameter_groups, recalibrate_batch_norm, set_learning_rate
from avag_core.training.progress import progress

# ----------------------------------------------------------------------------------------------------------------
config = {
    "data": "data/avagd_index",  # folder with train.csv and val.csv (training/prepare_dataset.py)
    "out_dir": "runs/avagformer_b5",
    "model": "avagformer_b5",
    "image_size": 512,
    "mixer_bias": "per_head",
    "audio_encoder": "auto",  # auto | vggish | log_mel_cnn (auto: vggish when vggish_weights is given)
    "foreground_prior": 0.01,  # initial probability of the final masks (0: PyTorch's default init, as released)
    "backbone_weights": "",  # official PVT-v2 ImageNet .pth
    "vggish_weights": "",  # vggish-10086976.pth
    "init_checkpoint": "",  # start from one of our checkpoints instead
    "epochs": 25,
    "max_steps": 0,  # stop after this many optimizer steps (0: no limit)
    "max_minutes": 0.0,  # stop training after this much wall time, then validate and save (0: no limit)
    "batch_size": 24,  # per process
    "grad_accum": 1,
    "lr": 2e-5,
    "final_lr_scale": 10.0,  # learning rate of the final path (compressors + upsamplers) relative to lr
    "warmup_steps": 0,  # linear learning-rate warm-up
    "grad_clip": 0.0,  # clip the gradient norm to this (0: no clipping, as released)
    "bn_recalibration_batches": 50,  # before each validation, recompute BatchNorm statistics (0: keep the EMA)
    "weight_decay": 0.01,
    "aux_weight": 0.1,
    "augment": True,  # the released joint image/mask augmentation (affine, flip, colour jitter)
    "audio_crop_min_s": 0.0,  # > 0: train on random crops of each clip, this long up to whole (0: whole, as released)
    "freeze_backbone_epochs": 10,
    "precision": "fp32",  # fp32 | bf16 | fp16 (fp16 uses a gradient scaler)
    "device": "auto",
    "num_workers": 4,
    "seed": 123,
    "log_every": 10,
    "resume": False,
}
# ----------------------------------------------------------------------------------------------------------------


def parse_config(argv: list[str] | None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file overriding the defaults")
    for key, default in config.items():
        kind = (lambda s: s.lower() in ("1", "true", "yes")) if isinstance(default, bool) else type(default)
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, type=kind, default=None)
    args = parser.parse_args(argv)
    cfg = dict(config)
    if args.config:
        loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        unknown = sorted(set(loaded) - set(cfg))
        if unknown:
            parser.error(f"unknown keys in {args.config}: {unknown}")
        cfg.update(loaded)
    cfg.update({k: v for k, v in vars(args).items() if k in cfg and v is not None})
    if cfg["precision"] not in ("fp32", "bf16", "fp16"):
        parser.error(f"precision must be fp32, bf16 or fp16, got {cfg['precision']!r}")
    if cfg["audio_encoder"] not in ("auto", "vggish", "log_mel_cnn"):
        parser.error(f"audio_encoder must be auto, vggish or log_mel_cnn, got {cfg['audio_encoder']!r}")
    if cfg["audio_encoder"] == "log_mel_cnn" and cfg["vggish_weights"]:
        parser.error("vggish_weights is given but audio_encoder is log_mel_cnn")
    if not 0.0 <= cfg["foreground_prior"] < 1.0:
        parser.error(f"foreground_prior must be in [0, 1), got {cfg['foreground_prior']}")
    if cfg["final_lr_scale"] <= 0 or min(cfg["warmup_steps"], cfg["grad_clip"], cfg["bn_recalibration_batches"],
                                         cfg["audio_crop_min_s"]) < 0:
        parser.error("final_lr_scale must be positive; warmup_steps, grad_clip, bn_recalibration_batches and "
                     "audio_crop_min_s non-negative")
    return cfg


def model_overrides(cfg: dict) -> dict:
    """The AVAGFormer config fields that the training config sets."""
    encoder = cfg["audio_encoder"]
    if encoder == "auto":
        encoder = "vggish" if cfg["vggish_weights"] else "log_mel_cnn"
    return {"image_size": cfg["image_size"], "mixer_bias": cfg["mixer_bias"], "audio_encoder": encoder,
            "freeze_audio_encoder": encoder == "vggish", "foreground_prior": cfg["foreground_prior"] or None}


def rng_state() -> dict:
    """Every RNG's state as plain Python values (they pickle across ranks and load with weights_only)."""
    numpy_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state().tolist(),
             "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def out_of_time(deadline: float, distributed: bool, device: torch.device) -> bool:
    """Past the deadline on any rank (so that all ranks stop at the same step)."""
    if deadline == math.inf:
        return False
    late = torch.tensor([float(time.time() > deadline)], device=device)
    if distributed:
        dist.all_reduce(late, op=dist.ReduceOp.MAX)
    return bool(late.item())


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    else:
        rank, world = 0, 1
        device = resolve_device(cfg["device"])
    master = rank == 0
    random.seed(cfg["seed"] + rank)
    np.random.seed(cfg["seed"] + rank)
    torch.manual_seed(cfg["seed"] + rank)
    out_dir = Path(cfg["out_dir"])
    if master:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    # model and optimizer --------------------------------------------------------------------------------------
    model = build_model(cfg["model"], backbone_weights=cfg["backbone_weights"] or None,
                        vggish_weights=cfg["vggish_weights"] or None, **model_overrides(cfg))
    if cfg["init_checkpoint"]:
        load_state_dict_strictly(model, load_checkpoint(cfg["init_checkpoint"])["model"], cfg["init_checkpoint"])
    model.to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg["final_lr_scale"]), lr=cfg["lr"],
                                  weight_decay=cfg["weight_decay"])
    scaler = torch.amp.GradScaler(device.type, enabled=cfg["precision"] == "fp16")
    start_epoch, step, best = 0, 0, -math.inf
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if cfg["resume"] and last_path.is_file():
        state = load_checkpoint(last_path)
        load_state_dict_strictly(model, state["model"], str(last_path))
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, step, best = state["epoch"] + 1, state["step"], state["best_miou_f"]
        restore_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
        if master:
            print(f"resumed from {last_path}: epoch {start_epoch}, step {step}")

    # data -------------------------------------------------------------------------------------------------------
    data = Path(cfg["data"])
    train_set = AffordanceDataset(read_index(data / "train.csv"), cfg["image_size"],
                                  model.config.num_audio_windows, augment=cfg["augment"],
                                  audio_crop_min_s=cfg["audio_crop_min_s"])
    val_set = AffordanceDataset(read_index(data / "val.csv"), cfg["image_size"],
                                model.config.num_audio_windows, augment=False)
    train_sampler = DistributedSampler(train_set, shuffle=True, seed=cfg["seed"], drop_last=True) if distributed \
        else None
    # Each rank scores every world-th val sample: unlike DistributedSampler, no sample is padded in twice.
    val_shard = Subset(val_set, range(rank, len(val_set), world)) if distributed else val_set
    generator = torch.Generator().manual_seed(cfg["seed"] + rank)
    train_loader = DataLoader(train_set, cfg["batch_size"], shuffle=train_sampler is None, sampler=train_sampler,
                              num_workers=cfg["num_workers"], drop_last=len(train_set) >= cfg["batch_size"] * world,
                              pin_memory=device.type == "cuda", generator=generator,
                              persistent_workers=cfg["num_workers"] > 0)
    val_loader = DataLoader(val_shard, cfg["batch_size"], num_workers=cfg["num_workers"])

    # With a frozen encoder, embed each distinct window once for the whole run. Cropped clips are new windows
    # nearly every time, so then the cache only keeps the padding window and the like from being embedded again.
    audio_cache = (AudioEmbeddingCache(capacity=4096 if cfg["audio_crop_min_s"] else 1 << 20)
                   if model.config.freeze_audio_encoder else None)

    def audio_inputs(log_mel: torch.Tensor) -> dict:
        if audio_cache is None:
            return {"log_mel": log_mel.to(device)}
        embeddings = audio_cache.embed(lambda w: model.audio_encoder(w.to(device)).float(), log_mel.flatten(0, 1))
        return {"audio_embeddings": embeddings.view(*log_mel.shape[:2], -1)}

    def forward_only(batch: dict) -> None:
        with autocast_for(device, cfg["precision"]):
            model(batch["image"].to(device, non_blocking=True), **audio_inputs(batch["log_mel"]))

    writer = SummaryWriter(out_dir / "tensorboard") if master else None
    metrics_file = out_dir / "metrics.csv"
    metric_columns = ["epoch", "step", "train_loss", "mIoU_f", "F_f", "mIoU_d", "F_d", "seconds"]
    if master and not (cfg["resume"] and metrics_file.is_file()):
        with open(metrics_file, "w", newline="") as f:
            csv.writer(f).writerow(metric_columns)

    # loop -------------------------------------------------------------------------------------------------------
    trained = None
    deadline = time.time() + 60 * cfg["max_minutes"] if cfg["max_minutes"] else math.inf
    for epoch in range(start_epoch, cfg["epochs"]):
        backbone_trainable = epoch >= cfg["freeze_backbone_epochs"]
        model.backbone.requires_grad_(backbone_trainable)
        if distributed and trained is not backbone_trainable:  # DDP registers only parameters that need grads
            ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        trained = backbone_trainable
        net = ddp if distributed else model
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)
        model.train()
        started, loss_sum, loss_count = time.time(), 0.0, 0
        bar = progress(train_loader, f"epoch {epoch}", disable=not master)
        for micro, batch in enumerate(bar):
            with autocast_for(device, cfg["precision"]):
                output = net(batch["image"].to(device, non_blocking=True), **audio_inputs(batch["log_mel"]))
            losses = affordance_loss(output, batch["function_mask"].to(device), batch["dependency_mask"].to(device),
                                     cfg["aux_weight"])
            scaler.scale(losses.total / cfg["grad_accum"]).backward()
            loss_sum, loss_count = loss_sum + losses.total.item(), loss_count + 1
            if (micro + 1) % cfg["grad_accum"] == 0:
                set_learning_rate(optimizer, cfg["lr"], cfg["warmup_steps"], step)
                if cfg["grad_clip"]:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if master and step % cfg["log_every"] == 0:
                    rate = loss_count * cfg["batch_size"] * world / (time.time() - started)
                    bar.set_postfix(loss=f"{loss_sum / loss_count:.4f}", samples_per_s=f"{rate:.1f}")
                    writer.add_scalar("train/loss", losses.total.item(), step)
                    writer.add_scalar("train/loss_function", losses.function.item(), step)
                    writer.add_scalar("train/loss_dependency", losses.dependency.item(), step)
                if (cfg["max_steps"] and step >= cfg["max_steps"]) or out_of_time(deadline, distributed, device):
                    break
        if cfg["bn_recalibration_batches"]:
            recalibrate_batch_norm(model, itertools.islice(train_loader, cfg["bn_recalibration_batches"]),
                                   forward_only)
        scores = score_model(model, val_loader, device, cfg["precision"])
        sums = scores.as_tensor()
        if distributed:
            sums = sums.to(device)
            dist.all_reduce(sums)
        result = AffordanceScores.from_tensor(sums.cpu()).result()
        stop = bool(cfg["max_steps"] and step >= cfg["max_steps"]) or out_of_time(deadline, distributed, device)
        rngs = [rng_state()]
        if distributed:
            rngs = [None] * world
            dist.all_gather_object(rngs, rng_state())
        if master:
            train_loss = loss_sum / max(loss_count, 1)
            row = [epoch, step, train_loss, *(result[k] for k in ("mIoU_f", "F_f", "mIoU_d", "F_d")),
                   time.time() - started]
            with open(metrics_file, "a", newline="") as f:
                csv.writer(f).writerow(row)
            for key in ("mIoU_f", "F_f", "mIoU_d", "F_d"):
                writer.add_scalar(f"val/{key}", result[key], step)
            writer.flush()
            improved = result["mIoU_f"] > best
            best = max(best, result["mIoU_f"])
            state = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                     "step": step, "rng": rngs, "train_config": cfg, "best_miou_f": best, "val": result}
            save_checkpoint(last_path, model, **state)
            if improved:
                save_checkpoint(best_path, model, **state)
            print(f"epoch {epoch}: train loss {train_loss:.4f} | val mIoU_f {result['mIoU_f']:.2f} "
                  f"F_f {result['F_f']:.2f} mIoU_d {result['mIoU_d']:.2f} F_d {result['F_d']:.2f}"
                  f"{' (best)' if improved else ''}", flush=True)
        if stop:
            break
    if writer:
        writer.close()
    if distributed:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
