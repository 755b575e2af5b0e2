"""What an export folder holds: the graphs' signatures and the manifest (avagformer.json), which this module alone
writes and reads, and where the exports of checkpoints are cached. A leaf: the export, the quantizer and the
backends all import it, and it imports none of them.

The manifest holds the model config, the graphs' signatures, the input normalisation, the mask threshold, where
the weights came from, the versions that wrote the graphs and, after quantization, the quantized graphs with
their calibration.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..audio import EXAMPLE_FRAMES, MEL_BANDS
from ..config import AVAGFormerConfig
from ..image import IMAGENET_MEAN, IMAGENET_STD
from ..modeling.vggish import EMBEDDING_DIM

MANIFEST_NAME = "avagformer.json"
EXPORT_FORMAT = 1
VISUAL_OUTPUTS = ("visual_stride8", "visual_stride16", "visual_stride32")
# Shapes hold ints, or None for an axis the graph leaves free.
Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class GraphSignature:
    file: str
    inputs: dict[str, Shape]
    outputs: dict[str, Shape]


def graph_signatures(config: AVAGFormerConfig) -> dict[str, GraphSignature]:
    """What each exported graph takes and returns, derived from the config alone: export writes graphs with
    these signatures and the runtimes check the files they open against them."""
    size, channels = config.image_size, config.fpn_dim
    visual = {name: (1, channels, size // stride, size // stride)
              for name, stride in zip(VISUAL_OUTPUTS, (8, 16, 32))}
    logits = (1, 1, size, size)
    return {
        "image_encoder": GraphSignature("image_encoder.onnx", {"pixels": (1, 3, size, size)}, visual),
        "audio_encoder": GraphSignature("audio_encoder.onnx", {"log_mel": (None, 1, EXAMPLE_FRAMES, MEL_BANDS)},
                                        {"embeddings": (None, EMBEDDING_DIM)}),
        "head": GraphSignature("head.onnx",
                               {**visual, "audio_embeddings": (1, config.num_audio_windows, EMBEDDING_DIM)},
                               {"function_logits": logits, "dependency_logits": logits}),
    }


def write_manifest(folder: Path, config: AVAGFormerConfig, *, threshold: float, source: dict,
                   versions: dict[str, Any]) -> Path:
    """The manifest of freshly exported graphs, written into `folder` (the export's own staging folder, which
    is moved into place whole); returns its path."""
    manifest = {
        "format": EXPORT_FORMAT,
        "config": config.to_dict(),
        "graphs": {name: {"file": s.file, "inputs": s.inputs, "outputs": s.outputs}
                   for name, s in graph_signatures(config).items()},
        "normalisation": {"input": "RGB uint8 resized to image_size x image_size (bilinear, antialiased)",
                          "mean": [255 * m for m in IMAGENET_MEAN], "std": [255 * s for s in IMAGENET_STD]},
        "threshold": threshold,
        "source": source,
        "versions": versions,
    }
    path = folder / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def record_quantized(folder: Path, precision: str, entry: dict[str, Any]) -> None:
    """Add quantized graphs to an export folder's manifest: `entry` holds "graphs" (graph -> file, already in
    the folder) and what made them. The manifest is replaced atomically, so a reader sees it before or after."""
    path = folder / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest.setdefault("quantized", {})[precision] = entry
    staged = folder / f".{MANIFEST_NAME}.tmp"
    staged.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(staged, path)


@dataclass(frozen=True)
class ExportManifest:
    folder: Path
    config: AVAGFormerConfig
    quantized: dict[str, dict[str, str]]  # precision -> graph -> file (avag_core.inference.quantize)


def read_manifest(folder: str | os.PathLike) -> ExportManifest:
    """An export folder's manifest, checked for what the runtimes rely on."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ValueError(f"{folder} is not an AVAGFormer export folder: {MANIFEST_NAME} is missing "
                         "(write one with python -m avag_core.export)")
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("format") != EXPORT_FORMAT:
            raise ValueError(f"export format {manifest.get('format')!r}, this version reads {EXPORT_FORMAT}")
        config = AVAGFormerConfig.from_dict(manifest["config"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is not a valid export manifest: {error}") from error
    quantized = {precision: entry["graphs"] for precision, entry in manifest.get("quantized", {}).items()}
    files = [s.file for s in graph_signatures(config).values()] + [f for g in quantized.values() for f in g.values()]
    for file in files:
        if not (folder / file).is_file():
            raise ValueError(f"export folder {folder} lacks {file}")
    return ExportManifest(folder, config, quantized)


def cache_root() -> Path:
    """Where exports of checkpoints are kept: $AVAG_ROS_CACHE_DIR, else $XDG_CACHE_HOME/avag_ros."""
    if os.environ.get("AVAG_ROS_CACHE_DIR"):
        return Path(os.environ["AVAG_ROS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "avag_ros"
