"""bf16 and int8 on the CPU (OpenVINO, NNCF): accuracy held to the goals on the demo checkpoint, clear refusals.

No timing here: bench/inference.py and bench/precision.py measure speed and accuracy at scale."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import Image

from avag_core import AffordancePredictor
from avag_core.cli.export import main as export_main
from avag_core.data.synthetic import sample_pairs
from avag_core.inference.manifest import MANIFEST_NAME
from avag_core.training.evaluation import score_predictor

from conftest import DEMO_CHECKPOINT
from ros_support import Probe, grounding_node, ros_domain, write_tone

VAL_SEED = 2  # the calibration draws with seed 1 (avag_core.inference.quantize.CALIBRATION_SEED)
VAL_PAIRS = 60
GOALS = {"bf16": 0.5, "int8": 1.5}  # largest drop of mIoU_f and mIoU_d from fp32, in points


def cpu_has_bf16() -> bool:
    import openvino as ov
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def quantized(module_folder):
    folder = module_folder / "demo"
    result = subprocess.run([sys.executable, "-m", "avag_core.export", "--checkpoint", str(DEMO_CHECKPOINT),
                             "--out", str(folder), "--quantize", "int8", "--calibration", "synthetic"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def reference():
    pairs = sample_pairs(VAL_SEED, VAL_PAIRS)
    scores, _ = score_predictor(AffordancePredictor.from_checkpoint(DEMO_CHECKPOINT, device="cpu"), pairs)
    return pairs, scores.result()


@pytest.mark.slow  # int8 calibration
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_low_precision_stays_within_its_accuracy_goal(quantized, reference, precision):
    if precision == "bf16" and not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 instructions (the refusal is tested below)")
    pairs, fp32 = reference
    predictor = AffordancePredictor.from_checkpoint(quantized, device="cpu", precision=precision, backend="openvino")
    result = score_predictor(predictor, pairs)[0].result()
    for metric in ("mIoU_f", "mIoU_d"):
        assert fp32[metric] - result[metric] <= GOALS[precision], (metric, fp32[metric], result[metric])
    assert result["mIoU_f"] > 50  # the goal means something only for a model that works


@pytest.mark.slow  # int8 calibration
def test_the_manifest_records_the_int8_graphs_and_their_calibration(quantized):
    entry = json.loads((quantized / MANIFEST_NAME).read_text())["quantized"]["int8"]
    assert entry["graphs"] == {"image_encoder": "image_encoder.int8.xml", "audio_encoder": "audio_encoder.int8.xml"}
    assert entry["kept_in_fp32"] == ["head"]
    assert entry["calibration"] == {"source": "synthetic", "samples": 64, "seed": 1}
    for file in entry["graphs"].values():
        assert (quantized / file).is_file() and (quantized / file.replace(".xml", ".bin")).is_file()


def test_bf16_runs_where_the_cpu_has_it_and_is_refused_naming_it_where_not(small_export):
    folder = small_export
    if cpu_has_bf16():
        predictor = AffordancePredictor.from_checkpoint(folder, device="cpu", precision="bf16", backend="openvino")
        assert predictor.backend.target[1]["INFERENCE_PRECISION_HINT"] == "bf16"
    else:
        with pytest.raises(ValueError, match="bf16 instructions"):
            AffordancePredictor.from_checkpoint(folder, device="cpu", precision="bf16", backend="openvino")


def test_int8_without_quantized_graphs_is_refused_naming_the_export_command(small_export):
    folder = small_export
    with pytest.raises(ValueError, match="has no int8 graphs.*--quantize int8"):
        AffordancePredictor.from_checkpoint(folder, device="cpu", precision="int8", backend="openvino")
    with pytest.raises(ValueError, match="is a checkpoint.*--quantize int8"):
        AffordancePredictor.from_checkpoint(DEMO_CHECKPOINT, device="cpu", precision="int8", backend="openvino")
    for backend in ("torch", "onnxruntime"):
        with pytest.raises(ValueError, match=f"not for the {backend} backend"):
            AffordancePredictor.from_checkpoint(folder if backend == "onnxruntime" else DEMO_CHECKPOINT,
                                                device="cpu", precision="int8", backend=backend)


def test_export_refuses_quantize_without_calibration_and_a_calibration_folder_without_clips(tmp_path, capsys):
    # The export command's own main(), in this process: the slow tier runs the command as a user does.
    base = ["--checkpoint", str(DEMO_CHECKPOINT), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as stop:
        export_main([*base, "--quantize", "int8"])
    assert stop.value.code == 2 and "--quantize and --calibration go together" in capsys.readouterr().err
    images_only = tmp_path / "calibration"
    images_only.mkdir()
    cv2.imwrite(str(images_only / "a.png"), np.zeros((32, 32, 3), np.uint8))
    assert export_main([*base, "--quantize", "int8", "--calibration", str(images_only)]) == 2
    error = capsys.readouterr().err
    assert "needs images" in error and "it has 1 and 0" in error
    assert not (tmp_path / "out").exists()  # refused before exporting, not after


@pytest.mark.slow  # int8 calibration
def test_the_node_runs_int8_from_a_quantized_export(quantized, tmp_path):
    with ros_domain() as (context, add):
        node = add(grounding_node(context, quantized, write_tone(tmp_path / "tone.wav"), backend="openvino",
                                  precision="int8"))
        probe = add(Probe(context, {"affordance/function_mask": Image}))
        assert node._state_machine.current_state[1] == "active"
        image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), np.uint8)
        assert probe.wait_for("affordance/function_mask", timeout=60, publish=lambda: probe.publish_rgb(image))
