"""Inference backends: what runs the model's three parts (image encoder, audio encoder, head) for the predictor.

| backend     | runs                                  | devices (`device`)                          |
|-------------|---------------------------------------|---------------------------------------------|
| torch       | the PyTorch model, eager              | auto, cpu, cuda, cuda:N                     |
| onnxruntime | the exported graphs (inference.export) | auto, cpu, cuda, cuda:N (TensorRT, then CUDA) |
| openvino    | the exported graphs                   | auto, cpu, gpu (an Intel GPU)               |

Every backend takes and returns torch tensors, so the predictor's pre- and post-processing is one piece of code
whatever runs the model. fp32 means fp32 everywhere: the runtimes are told so, because some pick bf16 or TF32 on
their own.
"""
from __future__ import annotations

import contextlib
import importlib
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..config import BACKENDS, PRECISION_NAMES, AVAGFormerConfig
from ..modeling import AVAGFormer
from .manifest import (VISUAL_OUTPUTS, ExportManifest, GraphSignature, Shape, cache_root, graph_signatures,
                       read_manifest)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for fp16/bf16; nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' picks the first GPU when there is one; also accepts 'cpu', 'cuda', 'cuda:N'."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"invalid device {device!r}; use auto, cpu, cuda or cuda:N") from error
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    return resolved


def check_precision(precision: str) -> None:
    if precision not in PRECISION_NAMES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_NAMES)}, got {precision!r}")


INT8_HELP = ("int8 runs quantized graphs on the openvino backend: export them with python -m avag_core.export "
             "--checkpoint CKPT --out DIR --quantize int8 --calibration DIR_OF_IMAGES_AND_CLIPS")


class InferenceBackend(ABC):
    name: ClassVar[str]
    config: AVAGFormerConfig
    device: torch.device  # where the predictor prepares inputs and post-processes outputs
    description: str  # what actually runs, for logs and diagnostics

    @classmethod
    @abstractmethod
    def resolve_target(cls, device: str, precision: str) -> Any:
        """Check a device and precision for this backend (ValueError naming the problem); cheap, no model."""

    @abstractmethod
    def encode_image(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """[1, 3, S, S] normalised -> the FPN maps at strides 8, 16 and 32."""

    @abstractmethod
    def embed_audio(self, windows: torch.Tensor) -> torch.Tensor:
        """[n, 1, 96, 64] log-mel windows -> [n, 128] fp32 embeddings on `device`."""

    @abstractmethod
    def decode(self, visual: list[torch.Tensor], embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch-1 FPN maps and one [T, 128] embedding set per sound -> function and dependency logits
        [sounds, 1, S, S]."""


class TorchBackend(InferenceBackend):
    name = "torch"

    def __init__(self, model: AVAGFormer, device: str | torch.device = "auto", precision: str = "fp32") -> None:
        self.device = self.resolve_target(device, precision)
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.precision = precision
        self.description = str(self.device)

    @classmethod
    def resolve_target(cls, device: str | torch.device, precision: str) -> torch.device:
        check_precision(precision)
        if precision == "int8":
            raise ValueError(f"precision 'int8' is not for the torch backend; {INT8_HELP}")
        resolved = resolve_device(device)
        if precision != "fp32" and resolved.type != "cuda":
            raise ValueError(f"precision {precision!r} needs a CUDA device; on {resolved} use fp32")
        return resolved

    def encode_image(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        with autocast_for(self.device, self.precision):
            return self.model.encode_image(pixels)

    def embed_audio(self, windows: torch.Tensor) -> torch.Tensor:
        with autocast_for(self.device, self.precision):
            return self.model.audio_encoder(windows.to(self.device)).float()

    def decode(self, visual: list[torch.Tensor], embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        visual = [v.expand(len(embeddings), -1, -1, -1) for v in visual]
        with autocast_for(self.device, self.precision):
            output = self.model.decode(visual, embeddings)
        return output.function_logits, output.dependency_logits


def import_runtime(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ValueError(f"backend {module!r} needs the Python package {package}, which cannot be imported "
                         f"({error}); install it with: pip install {package}") from error


def _check_signature(path: Path, role: str, expected: dict[str, Shape], actual: dict[str, Shape]) -> None:
    if list(actual) != list(expected):
        raise ValueError(f"{path} does not match its manifest: its {role} are {list(actual)}, "
                         f"the model config needs {list(expected)}")
    for name, shape in expected.items():
        found = actual[name]
        if len(found) != len(shape) or any(e is not None and f != e for e, f in zip(shape, found)):
            raise ValueError(f"{path} does not match its manifest: {name} has shape {list(found)}, the model "
                             f"config needs {['any' if e is None else e for e in shape]}")


class ExportedGraphsBackend(InferenceBackend):
    """Runs an export folder's graphs. Subclasses open a graph, describe its inputs and outputs, and run it on
    numpy arrays; the head runs once per sound, because its graph has a fixed batch of one."""

    def __init__(self, folder: str | Path, device: str = "auto", precision: str = "fp32") -> None:
        self.target = self.resolve_target(str(device), precision)
        manifest = read_manifest(folder)
        self.folder = manifest.folder
        self.config = manifest.config
        self.device = torch.device("cpu")
        self._signatures = graph_signatures(self.config)
        self._graphs = {name: self._open_checked(self._graph_file(manifest, name), s)
                        for name, s in self._signatures.items()}
        # An OpenVINO graph has one infer request, which two threads must not run at once (a keyframe renewal,
        # avag_core.inference.view_reuse, beside a frame of another predictor on this backend).
        self._graph_locks = {name: threading.Lock() for name in self._graphs}

    def _graph_file(self, manifest: ExportManifest, name: str) -> Path:
        return manifest.folder / self._signatures[name].file

    def _open_checked(self, path: Path, signature: GraphSignature) -> Any:
        try:
            graph = self._open(path)
        except Exception as error:  # each runtime raises its own types for truncated or foreign files
            raise ValueError(f"{self.name} cannot load the ONNX graph {path}: {error}") from error
        inputs, outputs = self._io_shapes(graph)
        _check_signature(path, "inputs", signature.inputs, inputs)
        _check_signature(path, "outputs", signature.outputs, outputs)
        return graph

    @abstractmethod
    def _open(self, path: Path) -> Any:
        """Load one graph for `self.target`."""

    @abstractmethod
    def _io_shapes(self, graph: Any) -> tuple[dict[str, Shape], dict[str, Shape]]:
        """Input and output names, in order, with their shapes (None for a free axis)."""

    @abstractmethod
    def _run(self, graph: Any, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        """Run one graph; the outputs in the order asked for."""

    def _run_graph(self, name: str, feeds: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        arrays = {key: np.ascontiguousarray(value.detach().cpu().numpy(), dtype=np.float32)
                  for key, value in feeds.items()}
        with self._graph_locks[name]:
            results = self._run(self._graphs[name], arrays, list(self._signatures[name].outputs))
        return [torch.from_numpy(np.asarray(result)) for result in results]

    def encode_image(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        return self._run_graph("image_encoder", {"pixels": pixels})

    def embed_audio(self, windows: torch.Tensor) -> torch.Tensor:
        return self._run_graph("audio_encoder", {"log_mel": windows})[0]

    def decode(self, visual: list[torch.Tensor], embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = dict(zip(VISUAL_OUTPUTS, visual))
        per_sound = [self._run_graph("head", {**maps, "audio_embeddings": e[None]}) for e in embeddings]
        function_logits, dependency_logits = (torch.cat(logits) for logits in zip(*per_sound))
        return function_logits, dependency_logits


class OnnxRuntimeBackend(ExportedGraphsBackend):
    name = "onnxruntime"
    GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

    def __init__(self, folder: str | Path, device: str = "auto", precision: str = "fp32") -> None:
        self._ort = import_runtime("onnxruntime", "onnxruntime")
        super().__init__(folder, device, precision)
        providers = self._graphs["image_encoder"].get_providers()
        self.description = f"onnxruntime ({', '.join(p.removesuffix('ExecutionProvider') for p in providers)})"

    @classmethod
    def resolve_target(cls, device: str, precision: str) -> list[tuple[str, dict]]:
        """-> onnxruntime's provider list: TensorRT, then CUDA where this build has them, then the CPU."""
        ort = import_runtime("onnxruntime", "onnxruntime")
        check_precision(precision)
        available = ort.get_available_providers()
        gpu = [p for p in cls.GPU_PROVIDERS if p in available]
        index = 0
        if device == "cpu":
            chosen = []
        elif device == "auto":
            chosen = gpu
        elif device == "cuda" or device.startswith("cuda:") and device[5:].isdigit():
            index = int(device[5:] or 0)
            if not gpu:
                raise ValueError(f"device {device!r} requested but this onnxruntime has no CUDA or TensorRT "
                                 f"provider (it has {', '.join(available)}); install onnxruntime-gpu")
            chosen = gpu
        else:
            raise ValueError(f"invalid device {device!r} for onnxruntime; use auto, cpu, cuda or cuda:N")
        if precision == "int8":
            raise ValueError(f"precision 'int8' is not for the onnxruntime backend; {INT8_HELP}")
        if precision == "bf16" or (precision == "fp16" and "TensorrtExecutionProvider" not in chosen):
            raise ValueError(f"precision {precision!r} on onnxruntime needs its TensorRT provider (fp16 only): "
                             "the exported graphs are fp32; use fp32")
        options = {
            "TensorrtExecutionProvider": {"device_id": index, "trt_fp16_enable": precision == "fp16",
                                          "trt_engine_cache_enable": True,
                                          "trt_engine_cache_path": str(cache_root() / "tensorrt")},
            "CUDAExecutionProvider": {"device_id": index, "use_tf32": 0},  # TF32 would round fp32 matmuls
        }
        return [(p, options[p]) for p in chosen] + [("CPUExecutionProvider", {})]

    def _open(self, path: Path) -> Any:
        options = self._ort.SessionOptions()
        options.log_severity_level = 3  # errors only: the TensorRT and CUDA providers are chatty
        # Idle worker threads would otherwise spin for a while after each run, taking the cores from the
        # pre- and post-processing that follows.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Without the memory pattern planner: same speed here, about 200 MB less peak memory for b0 at 512.
        options.enable_mem_pattern = False
        return self._ort.InferenceSession(str(path), options, providers=self.target)

    def _io_shapes(self, graph: Any) -> tuple[dict[str, Shape], dict[str, Shape]]:
        def shapes(nodes):
            return {n.name: tuple(d if isinstance(d, int) else None for d in n.shape) for n in nodes}
        return shapes(graph.get_inputs()), shapes(graph.get_outputs())

    def _run(self, graph: Any, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        return graph.run(outputs, feeds)


class OpenVINOBackend(ExportedGraphsBackend):
    name = "openvino"
    PRECISION_HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}

    def __init__(self, folder: str | Path, device: str = "auto", precision: str = "fp32") -> None:
        self._core = import_runtime("openvino", "openvino").Core()
        self.precision = precision
        super().__init__(folder, device, precision)
        self.description = f"openvino ({self.target[0]})"

    def _graph_file(self, manifest: ExportManifest, name: str) -> Path:
        if self.precision != "int8":
            return super()._graph_file(manifest, name)
        quantized = manifest.quantized.get("int8")
        if not quantized:
            raise ValueError(f"export folder {manifest.folder} has no int8 graphs; {INT8_HELP}")
        return manifest.folder / quantized[name] if name in quantized else super()._graph_file(manifest, name)

    @classmethod
    def resolve_target(cls, device: str, precision: str) -> tuple[str, dict[str, str]]:
        """-> (OpenVINO device name, compile properties)."""
        core = import_runtime("openvino", "openvino").Core()
        check_precision(precision)
        has_gpu = any(d.startswith("GPU") for d in core.available_devices)
        if device == "auto":
            name = "GPU" if has_gpu else "CPU"
        elif device == "cpu":
            name = "CPU"
        elif device == "gpu":
            if not has_gpu:
                raise ValueError(f"device 'gpu' requested but OpenVINO sees only {core.available_devices}")
            name = "GPU"
        else:
            raise ValueError(f"invalid device {device!r} for openvino; use auto, cpu or gpu (an Intel GPU)")
        if name == "CPU" and precision == "fp16":
            raise ValueError("precision 'fp16' on openvino needs device gpu; on the CPU use fp32, bf16 (on CPUs "
                             "with bf16 instructions) or int8")
        capabilities = core.get_property(name, "OPTIMIZATION_CAPABILITIES")
        if name == "CPU" and precision == "bf16" and "BF16" not in capabilities:
            raise ValueError(f"precision 'bf16' needs a CPU with bf16 instructions (AVX-512 BF16 or AMX); "
                             f"OpenVINO finds only {', '.join(capabilities)} on this one: use fp32 or int8")
        if precision == "int8":
            # What stays out of quantization (the head, norms, softmax, the deformable sampling) runs in bf16 where
            # the CPU has it: on this project's Xeon that took b5 at 512 from 811 to 742 ms per frame, within the
            # accuracy goal (docs/benchmarks.md); elsewhere in fp32, and on a GPU in its native fp16.
            hint = "f16" if name == "GPU" else ("bf16" if "BF16" in capabilities else "f32")
        else:
            hint = cls.PRECISION_HINTS[precision]
        return name, {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}

    def _open(self, path: Path) -> Any:
        name, properties = self.target
        # From the file, not from a model read into Python first: OpenVINO then maps the weights instead of holding
        # a second copy of them.
        compiled = self._core.compile_model(str(path), name, properties)
        return compiled, compiled.create_infer_request()

    def _io_shapes(self, graph: Any) -> tuple[dict[str, Shape], dict[str, Shape]]:
        compiled, _ = graph

        def shapes(ports):
            return {p.get_any_name(): tuple(None if d.is_dynamic else d.get_length() for d in p.get_partial_shape())
                    for p in ports}
        return shapes(compiled.inputs), shapes(compiled.outputs)

    def _run(self, graph: Any, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        compiled, request = graph
        results = request.infer(feeds)
        return [results[compiled.output(name)] for name in outputs]


EXPORTED_BACKENDS: dict[str, type[ExportedGraphsBackend]] = {"onnxruntime": OnnxRuntimeBackend,
                                                              "openvino": OpenVINOBackend}


def backend_class(name: str) -> type[InferenceBackend]:
    classes = {"torch": TorchBackend, **EXPORTED_BACKENDS}
    if name not in classes:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return classes[name]
