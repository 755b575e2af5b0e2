"""Loading pretrained weights and saving/loading our own checkpoints. Everything is local; nothing is fetched.

Files are loaded with `weights_only=True`, so a checkpoint cannot run code. Checkpoints are written to a
temporary file in the same folder and renamed over the target, so a crash never leaves a half-written file.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from timm.models.pvt_v2 import checkpoint_filter_fn
from torch import nn

from ..errors import existing_file

CHECKPOINT_FORMAT = "avag_ros.avagformer"
CHECKPOINT_VERSION = 2  # 2: the audio encoder's weights are under "audio_encoder." (1: "vggish.")


class WeightsMismatchError(ValueError):
    """A weights file does not fit the model; the message lists the missing and unexpected keys."""


def _describe(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def load_file(path: str | os.PathLike) -> Any:
    path = existing_file(path, "weights file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        # torch's messages run over many lines of advice; keep the line that says what is wrong.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        detail = next((line[line.index("Unsupported"):] for line in lines if "Unsupported" in line),
                      lines[0]).split(". ")[0]
        raise ValueError(f"cannot read {path} as a PyTorch weights file (truncated, not written by torch.save, or "
                         f"holding objects other than tensors and plain values): {detail}") from error


def load_state_dict_strictly(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strict load whose error names every missing, unexpected and wrongly shaped key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong_shape = sorted(f"{k} {tuple(state_dict[k].shape)} != {tuple(own[k].shape)}"
                         for k in set(own) & set(state_dict) if state_dict[k].shape != own[k].shape)
    if missing or unexpected or wrong_shape:
        parts = [f"{source} does not match {type(module).__name__}"]
        if missing:
            parts.append(f"missing keys: {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_describe(unexpected)}")
        if wrong_shape:
            parts.append(f"wrong shapes: {_describe(wrong_shape)}")
        raise WeightsMismatchError("; ".join(parts))
    module.load_state_dict(state_dict)


def _unwrap(state: Any, path: Path) -> dict[str, torch.Tensor]:
    # Some redistributions nest the tensors one level down; the official files are flat.
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a flat dict of tensors")
    return state


def load_pvt_v2_weights(backbone: nn.Module, path: str | os.PathLike) -> None:
    """Load an official PVT-v2 ImageNet file (e.g. `pvt_v2_b5.pth`) into a `PVTBackbone`, via timm's filter."""
    state = _unwrap(load_file(path), Path(path))
    state = checkpoint_filter_fn(state, backbone.body)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}  # ImageNet classifier
    load_state_dict_strictly(backbone.body, state, str(path))


def load_vggish_weights(vggish: nn.Module, path: str | os.PathLike) -> None:
    """Load the torchvggish release file `vggish-10086976.pth` into a `VGGish`."""
    load_state_dict_strictly(vggish, _unwrap(load_file(path), Path(path)), str(path))


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> None:
    """Atomically write model weights, the config that rebuilds the model, and any training state in `extra`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
               "config": model.config.to_dict(), "model": model.state_dict(), **extra}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's content: what exports and conversions record as their source, and the export
    cache's key."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_checkpoint(payload: Any) -> bool:
    """Whether a loaded file is one of our checkpoints."""
    return isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read one of our checkpoints and check that it is one."""
    return checkpoint_payload(load_file(path), path)


def checkpoint_payload(payload: Any, path: str | os.PathLike) -> dict[str, Any]:
    """A loaded checkpoint of ours, checked and brought to the current version."""
    if not is_checkpoint(payload):
        raise ValueError(f"{path} is not an avag_ros AVAGFormer checkpoint (no '{CHECKPOINT_FORMAT}' format tag); "
                         "one trained with the released AVAGFormer code converts with "
                         "python -m avag_core.convert_released")
    version = payload.get("version")
    if version == 1:
        payload["model"] = {("audio_encoder." + k[len("vggish."):] if k.startswith("vggish.") else k): v
                            for k, v in payload["model"].items()}
    elif version != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {version}; "
                         f"this avag_core reads versions 1 to {CHECKPOINT_VERSION}")
    return payload
