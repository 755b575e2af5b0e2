"""Checkpoints trained with the authors' released code, against that code's own outputs.

`../shared/reference/released_avagformer/` holds a small released-format checkpoint (pvt_v2_b0, 2 encoder layers,
300 queries, 256 px) with real inputs and what the released model returned for them. Its README gives a rule for
the 18 vggish.* tensors the file leaves out; the tests add them by that rule, as a real released file carries them.
"""
import hashlib
import logging
import re
import subprocess
import sys

import pytest
import torch

from avag_core import AffordancePredictor
from avag_core.checkpoints.build import load_model
from avag_core.checkpoints.weights import load_checkpoint, save_checkpoint
from avag_core.cli.convert_released import main as convert_main

from conftest import released_reference, run_script, small_model, write_released

OUTPUTS = ("function_logits", "dependency_logits", "function_query_logits", "dependency_query_logits")
IMAGE_SIZE = 256  # the reference's
TOLERANCE = 1e-4  # in probability


@pytest.fixture(scope="module")
def released(module_folder):
    return write_released(module_folder)


@pytest.fixture(scope="module")
def reference_io():
    return (torch.load(released_reference("inputs.pt"), weights_only=True),
            torch.load(released_reference("released_outputs.pt"), weights_only=True))


def assert_matches_released(model, reference_io):
    inputs, expected = reference_io
    batch = inputs["image"].shape[0]
    with torch.no_grad():
        outputs = model.eval()(inputs["image"], inputs["audio"].view(batch, 20, 1, 96, 64))
    for name, ours in zip(OUTPUTS, outputs):
        assert ours.shape == expected[name].shape, name
        difference = (ours.sigmoid() - expected[name].sigmoid()).abs().max().item()
        assert difference < TOLERANCE, f"{name}: probabilities differ by {difference:.2e}"


def convert(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avag_core.convert_released", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def convert_in_process(capsys, *args) -> tuple[int, str]:
    """The CLI's own main() and its exit code, without starting an interpreter (and torch) for each case."""
    code = convert_main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def converted_best(released, module_folder):
    out = module_folder / "converted_best.pt"
    assert convert_main(["--checkpoint", str(released / "best.pth"), "--out", str(out),
                         "--image-size", str(IMAGE_SIZE)]) == 0
    return out


@pytest.mark.parametrize("name", ["best.pth", "last.pth"])
def test_both_released_formats_load_directly_and_match_the_released_outputs(released, reference_io, name, caplog):
    with caplog.at_level(logging.INFO, logger="avag_core.checkpoints.build"):
        model = load_model(released / name, image_size=IMAGE_SIZE)
    assert [r.getMessage() for r in caplog.records if "released AVAGFormer code" in r.getMessage()]
    config = model.config
    assert (config.backbone, config.encoder_layers, config.encoder_ffn_dim, config.query_layers,
            config.query_ffn_dim, config.num_queries) == ("pvt_v2_b0", 2, 512, 2, 256, 300)
    assert_matches_released(model, reference_io)


def test_converted_checkpoint_matches_and_records_its_source(released, reference_io, tmp_path):
    out = tmp_path / "converted.pt"
    result = convert("--checkpoint", released / "last.pth", "--out", out, "--image-size", IMAGE_SIZE)
    assert result.returncode == 0, result.stderr
    assert "backbone=pvt_v2_b0" in result.stdout and "encoder_layers=2" in result.stdout
    assert "dropped 33" in result.stdout and "18 transformer decoder" in result.stdout
    source = load_checkpoint(out)["source"]
    digest = hashlib.sha256((released / "last.pth").read_bytes()).hexdigest()
    assert source["kind"] == "released AVAGFormer" and source["sha256"] == digest
    assert sum(source["dropped"].values()) == 33
    predictor = AffordancePredictor.from_checkpoint(out, device="cpu")
    assert predictor.config.image_size == IMAGE_SIZE
    assert_matches_released(predictor.backend.model, reference_io)


def test_a_file_without_vggish_needs_the_vggish_weights(released, reference_io, tmp_path, capsys):
    # In process: the test above already runs the CLI as a user does, and two more interpreters cost a minute.
    bare = released_reference("released_model.pth")
    out = tmp_path / "converted.pt"
    code, err = convert_in_process(capsys, "--checkpoint", bare, "--out", out)
    assert code == 2 and "--vggish-weights" in err and not out.exists()
    with pytest.raises(ValueError, match="without its vggish.* tensors.*convert_released"):
        load_model(bare)
    code, err = convert_in_process(capsys, "--checkpoint", bare, "--out", out, "--image-size", IMAGE_SIZE,
                                   "--vggish-weights", released / "vggish-10086976.pth")
    assert code == 0, err
    assert load_checkpoint(out)["source"]["vggish_weights"]["sha256"]
    assert_matches_released(load_model(out), reference_io)


@pytest.mark.slow  # export round trips
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_exported_backends_match_the_released_final_masks(converted_best, reference_io, backend, module_folder,
                                                           monkeypatch):
    monkeypatch.setenv("AVAG_ROS_CACHE_DIR", str(module_folder / "cache"))  # both backends run one export
    runtime = AffordancePredictor.from_checkpoint(converted_best, device="cpu", backend=backend).backend
    inputs, expected = reference_io
    for sample in range(inputs["image"].shape[0]):
        windows = inputs["audio"][20 * sample:20 * (sample + 1)]
        logits = runtime.decode(runtime.encode_image(inputs["image"][sample:sample + 1]),
                                runtime.embed_audio(windows)[None])
        for name, ours in zip(OUTPUTS[:2], logits):
            difference = (ours.sigmoid() - expected[name][sample:sample + 1].sigmoid()).abs().max().item()
            assert difference < TOLERANCE, f"{backend} {name} sample {sample}: {difference:.2e}"


def write_official_pvt(path):
    """The reference's backbone alone, as the PVT-v2 ImageNet release lays it out (what a user might pass)."""
    state = torch.load(released_reference("released_model.pth"), weights_only=True)
    torch.save({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}, path)


def test_files_that_are_not_released_checkpoints_exit_2_and_write_nothing(released, tmp_path, capsys):
    ours = tmp_path / "ours.pt"
    save_checkpoint(ours, small_model())
    pvt = tmp_path / "pvt_v2_b0.pth"
    write_official_pvt(pvt)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((released / "best.pth").read_bytes()[:1_000_000])
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    cases = {ours: "already an avag_ros AVAGFormer checkpoint", pvt: "PVT-v2 backbone file",
             truncated: "cannot read", text: "cannot read", tmp_path / "missing.pth": "not found"}
    out = tmp_path / "out.pt"
    for path, message in cases.items():
        code, stderr = convert_in_process(capsys, "--checkpoint", path, "--out", out)
        assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, (path, stderr)
        assert not out.exists()
    result = convert("--checkpoint", truncated, "--out", out)  # and as a process: nothing else on stderr
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cannot read" in result.stderr and not out.exists()


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update({"head.mixer.fusion.1.q_proj_audio.weight": torch.zeros(256, 256)}),
     r"tensor head.mixer.fusion.1.q_proj_audio.weight \(256, 256\) fits no AVAGFormer config"),
    (lambda s: s.update({"head.fpn.output_convs.1.weight": torch.zeros(128, 128, 5, 5)}),
     r"fpn.output.1.weight \(128, 128, 5, 5\) != \(128, 128, 3, 3\)"),
    (lambda s: s.pop("backbone.block3.1.mlp.fc2.weight"),
     "the backbone fits no PVT-v2 variant.*no tensor for timm's stages.2.blocks.1.mlp.fc2.weight"),
    (lambda s: s.update({"backbone.block2.0.attn.q.weight": torch.zeros(64, 32)}),
     r"closest, pvt_v2_b0, differs in 1 tensor\(s\), the first: backbone.block2.0.attn.q.weight \(64, 32\)"),
    (lambda s: s.pop("head.fpn.lateral_convs.0.weight"), "lacks head.fpn.lateral_convs.0.weight"),
])
def test_a_tensor_that_fits_no_config_is_named(released, tmp_path, capsys, edit, message):
    state = torch.load(released / "best.pth", weights_only=True)
    edit(state)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=message):
        load_model(path)
    code, stderr = convert_in_process(capsys, "--checkpoint", path, "--out", tmp_path / "out.pt")
    assert code == 2 and re.search(message, stderr) and not (tmp_path / "out.pt").exists(), stderr


@pytest.mark.slow  # a round trip: evaluate.py and an export
def test_evaluate_and_export_take_a_released_checkpoint(released, synthetic_index, tmp_path):
    result = run_script("evaluate.py", "--checkpoint", released / "best.pth", "--data", synthetic_index,
                        "--split", "seen", "--device", "cpu", "--num-workers", "0")
    assert result.returncode == 0, result.stderr
    assert "| mIoU_f | F_f | mIoU_d | F_d |" in result.stdout
    folder = tmp_path / "onnx"
    result = subprocess.run([sys.executable, "-m", "avag_core.export", "--checkpoint", released / "best.pth",
                             "--out", folder, "--image-size", str(IMAGE_SIZE)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert (folder / "head.onnx").is_file()
