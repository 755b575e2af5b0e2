"""INT8 post-training quantization of an export folder's graphs with NNCF, for the openvino backend.

    python -m avag_core.export --checkpoint CKPT --out DIR --quantize int8 --calibration DIR|synthetic

Each quantized graph is calibrated on what it sees in use: the calibration images and clips go through the
predictor's own pre-processing. DIR holds images (.jpg, .png) and clips (.wav, .flac, .mp3), paired in turn;
`synthetic` draws pairs from avag_core.data.synthetic with CALIBRATION_SEED (use it only for weights trained on
that task).

The quantized graphs are OpenVINO IR beside the ONNX ones (GRAPH.int8.xml and .bin), listed in the manifest under
"quantized" with the calibration they came from. The head stays in fp32, chosen by measurement on the demo
checkpoint (150 synthetic val pairs, docs/benchmarks.md): quantizing all three graphs cost 3.6 points of mIoU_d
(the dependency mask is steered by a softmax over the function mask's logits, and its query masks are summed by
small convolutions, which int8 rounding shifts), quantizing the image and audio encoders alone cost 0.02; the head
is a tenth to a fifth of the time.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..audio import load_audio
from ..config import AVAGFormerConfig
from ..data.synthetic import SAMPLE_RATE, sample_pairs
from ..image import load_image
from .manifest import graph_signatures, read_manifest, record_quantized
from .preprocessing import prepare_audio, prepare_image

CALIBRATION_SEED = 1
CALIBRATION_SAMPLES = 64
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
QUANTIZED_GRAPHS = ("image_encoder", "audio_encoder")


def calibration_files(folder: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """A calibration folder's images and clips; a clear error if it lacks either. Cheap (nothing is decoded), so
    that the export command can check it before the minutes of exporting."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"calibration folder not found: {folder} (or give 'synthetic')")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    clips = [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES]
    if not images or not clips:
        raise ValueError(f"calibration folder {folder} needs images ({', '.join(IMAGE_SUFFIXES)}) and clips "
                         f"({', '.join(AUDIO_SUFFIXES)}); it has {len(images)} and {len(clips)}")
    return images, clips


def calibration_pairs(source: str, count: int = CALIBRATION_SAMPLES) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(image, waveform, sample rate) triples from a folder, or from the synthetic task with `synthetic`."""
    if source == "synthetic":
        return [(p.image, p.sound, SAMPLE_RATE) for p in sample_pairs(CALIBRATION_SEED, count)]
    images, clips = calibration_files(source)
    decoded = [load_audio(c) for c in clips[:count]]
    return [(load_image(image), *decoded[i % len(decoded)]) for i, image in enumerate(images[:count])]


def calibration_inputs(config: AVAGFormerConfig, pairs: list) -> dict[str, list[dict[str, np.ndarray]]]:
    """What each quantized graph receives for each calibration pair, through the predictor's pre-processing."""
    cpu = torch.device("cpu")  # where the openvino backend prepares its inputs
    inputs: dict[str, list] = {"image_encoder": [], "audio_encoder": []}
    for image, waveform, rate in pairs:
        inputs["image_encoder"].append({"pixels": prepare_image(image, config, cpu).numpy()})
        inputs["audio_encoder"].append({"log_mel": prepare_audio(waveform, rate, config).numpy()})
    return inputs


def quantize_export(folder: str | os.PathLike, calibration: str, count: int = CALIBRATION_SAMPLES) -> Path:
    """Write the int8 graphs of an export folder and record them in its manifest; returns the folder."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # nncf imports it; no CUDA is fine
    import nncf
    import openvino as ov

    folder = Path(folder)
    config = read_manifest(folder).config
    pairs = calibration_pairs(calibration, count)
    inputs = calibration_inputs(config, pairs)
    core = ov.Core()
    graphs = {}
    staging = Path(tempfile.mkdtemp(prefix=".int8.", dir=folder))
    try:
        signatures = graph_signatures(config)
        for name in QUANTIZED_GRAPHS:
            model = core.read_model(str(folder / signatures[name].file))
            # TRANSFORMER keeps the attention's softmax and layer norms in float, as the deformable encoder needs.
            quantized = nncf.quantize(model, nncf.Dataset(inputs[name]), subset_size=len(inputs[name]),
                                      model_type=nncf.ModelType.TRANSFORMER)
            file = f"{name}.int8.xml"
            ov.save_model(quantized, str(staging / file), compress_to_fp16=False)
            graphs[name] = file
        for file in graphs.values():
            for part in (file, file.replace(".xml", ".bin")):
                os.replace(staging / part, folder / part)
    finally:
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
    record_quantized(folder, "int8", {"graphs": graphs, "kept_in_fp32": [g for g in signatures if g not in graphs],
                                      "calibration": {"source": calibration, "samples": len(pairs),
                                                      "seed": CALIBRATION_SEED if calibration == "synthetic"
                                                      else None},
                                      "nncf": nncf.__version__})
    return folder
