"""Export an AVAGFormer to ONNX for the onnxruntime and OpenVINO backends (and TensorRT through onnxruntime).

    python -m avag_core.export (--checkpoint CKPT | --model PRESET) --out DIR [--image-size N] [--opset K]
                               [--quantize int8 --calibration DIR|synthetic]

The model is split where the predictor reuses work, so a runtime runs each part only when it must:

| graph                | inputs                                             | outputs                              |
|----------------------|----------------------------------------------------|--------------------------------------|
| image_encoder.onnx   | pixels [1, 3, S, S] (ImageNet-normalised)          | visual_stride8/16/32 (FPN maps)      |
| audio_encoder.onnx   | log_mel [windows, 1, 96, 64] (any window count)    | embeddings [windows, 128]            |
| head.onnx            | the three FPN maps + audio_embeddings [1, T, 128]  | function/dependency_logits [1,1,S,S] |

The image side runs once per frame whatever the number of sounds, and the audio encoder only on windows the
predictor has not embedded yet (padding windows once). Each graph keeps its weights in GRAPH.onnx.data beside
it. avagformer.json holds the model config, the graphs' signatures, the input normalisation, the threshold and
where the weights came from (avag_core.inference.manifest). With --quantize int8 the folder also gets INT8 graphs
for the openvino backend (avag_core.inference.quantize), calibrated on --calibration.
"""
from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from ..audio import EXAMPLE_FRAMES, MEL_BANDS
from ..checkpoints.build import load_model
from ..checkpoints.weights import file_digest
from ..errors import existing_file
from ..modeling import AVAGFormer
from ..modeling.vggish import EMBEDDING_DIM
from .manifest import (EXPORT_FORMAT, MANIFEST_NAME, GraphSignature, cache_root, graph_signatures,
                       write_manifest)

logger = logging.getLogger(__name__)

# GridSample (the deformable sampling) needs opset 16, LayerNormalization 17; 18 is read by onnxruntime,
# OpenVINO and TensorRT 10 alike.
DEFAULT_OPSET = 18


class ImageEncoderGraph(nn.Module):
    def __init__(self, model: AVAGFormer) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.encode_image(pixels))


class HeadGraph(nn.Module):
    """One sound per run: the head's chunking is sized from the batch at trace time, so the batch is fixed."""

    def __init__(self, model: AVAGFormer) -> None:
        super().__init__()
        self.model = model

    def forward(self, stride8: torch.Tensor, stride16: torch.Tensor, stride32: torch.Tensor,
                audio_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.model.decode([stride8, stride16, stride32], audio_embeddings)
        return output.function_logits, output.dependency_logits


def _export_graph(module: nn.Module, example: tuple[torch.Tensor, ...], path: Path, signature: GraphSignature,
                  opset: int) -> None:
    free_axes = {name: {axis: "windows" for axis, size in enumerate(shape) if size is None}
                 for name, shape in {**signature.inputs, **signature.outputs}.items()}
    with warnings.catch_warnings():
        # The TorchScript exporter, deprecated but kept on purpose: torch.export cannot trace the head's
        # size-dependent chunking. Its tracer warns about every Python int taken from a shape; all of them are
        # fixed by the signature.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        buffer = io.BytesIO()
        torch.onnx.export(module, example, buffer, input_names=list(signature.inputs),
                          output_names=list(signature.outputs),
                          dynamic_axes={k: v for k, v in free_axes.items() if v}, opset_version=opset,
                          dynamo=False)
    import onnx

    # Weights in a file beside the graph: the runtimes then read them straight into their own buffers instead
    # of first parsing a protobuf that holds them all (about 100 MB less peak memory at load for b0).
    onnx.save_model(onnx.load_model_from_string(buffer.getvalue()), str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=f"{path.name}.data", size_threshold=1024)
    onnx.checker.check_model(str(path), full_check=True)


def export_onnx(model: AVAGFormer, out_dir: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                threshold: float = 0.5, source: dict | None = None) -> Path:
    """Write the three graphs and their manifest into `out_dir`; returns it. `model` is left on the CPU in fp32
    and eval mode, as exported.

    The files are written into a temporary folder beside `out_dir`, removed on any exception (Ctrl-C included).
    A new `out_dir` is that folder renamed, so it appears whole or not at all; into an existing one the files are
    moved with the manifest last, so a folder with a manifest is always complete.
    """
    import onnx  # only exporting needs it: the torch backend runs without onnx installed

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    config = model.config
    signatures = graph_signatures(config)
    model = model.float().cpu().eval()
    size = config.image_size
    with torch.no_grad():
        pixels = torch.randn(1, 3, size, size)
        visual = tuple(model.encode_image(pixels))
        log_mel = torch.randn(2, 1, EXAMPLE_FRAMES, MEL_BANDS)
        embeddings = torch.rand(1, config.num_audio_windows, EMBEDDING_DIM)
    # The wrappers in eval mode too: the exporter restores each module's own mode afterwards, recursively, and a
    # new wrapper's is training, which would leave `model` with dropout on and batch statistics in BatchNorm.
    examples = {"image_encoder": (ImageEncoderGraph(model).eval(), (pixels,)),
                "audio_encoder": (model.audio_encoder, (log_mel,)),
                "head": (HeadGraph(model).eval(), (*visual, embeddings))}
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging = scratch / out_dir.name  # made with the umask's mode, unlike mkdtemp's 0o700: it may become out_dir
    try:
        staging.mkdir()
        for name, (module, example) in examples.items():
            _export_graph(module, example, staging / signatures[name].file, signatures[name], opset)
        write_manifest(staging, config, threshold=threshold, source=source or {},
                       versions={"torch": torch.__version__, "onnx": onnx.__version__, "opset": opset})
        if out_dir.is_dir() and any(out_dir.iterdir()):
            (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
            for signature in signatures.values():
                for name in (f"{signature.file}.data", signature.file):
                    os.replace(staging / name, out_dir / name)
            os.replace(staging / MANIFEST_NAME, out_dir / MANIFEST_NAME)
        else:
            os.replace(staging, out_dir)  # also onto an empty folder
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out_dir


def exported_checkpoint(checkpoint: str | os.PathLike) -> Path:
    """The export folder of a `.pt` checkpoint, made on first use and reused after: the cache key is the file's
    content (not its name or time), so a retrained checkpoint at the same path is exported again."""
    checkpoint = existing_file(checkpoint, "checkpoint")
    digest = file_digest(checkpoint)
    folder = cache_root() / "onnx" / f"{digest[:24]}-format{EXPORT_FORMAT}-opset{DEFAULT_OPSET}"
    if not (folder / MANIFEST_NAME).is_file():
        logger.info("exporting %s to ONNX once, into %s", checkpoint, folder)
        export_onnx(load_model(checkpoint), folder,
                    source={"checkpoint": str(checkpoint.resolve()), "sha256": digest})
    return folder
