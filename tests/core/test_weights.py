import pickle
import re

import pytest
import torch

from avag_core import AffordancePredictor
from avag_core.checkpoints.weights import (WeightsMismatchError, load_checkpoint, load_pvt_v2_weights,
                                           load_vggish_weights, save_checkpoint)
from avag_core.errors import InputFileNotFoundError
from avag_core.modeling.backbone import PVTBackbone
from avag_core.modeling.vggish import VGGish

from conftest import SMALL_IMAGE, small_model


def to_official_pvt_names(timm_state: dict) -> dict:
    """Rename timm keys back to the whai362 release layout (the inverse of timm's filter), plus its classifier."""
    out = {}
    for key, value in timm_state.items():
        key = key.replace("patch_embed.", "patch_embed1.")
        key = re.sub(r"stages\.(\d)\.downsample", lambda m: f"patch_embed{int(m[1]) + 1}", key)
        key = re.sub(r"stages\.(\d)\.blocks\.(\d+)", lambda m: f"block{int(m[1]) + 1}.{m[2]}", key)
        key = re.sub(r"^stages\.(\d)\.norm", lambda m: f"norm{int(m[1]) + 1}", key)
        key = key.replace("mlp.dwconv", "mlp.dwconv.dwconv")
        out[key] = value.clone()
    out["head.weight"], out["head.bias"] = torch.randn(1000, 256), torch.randn(1000)
    return out


@pytest.fixture(scope="module")
def official_pvt_file(module_folder):
    torch.manual_seed(3)
    source = PVTBackbone("pvt_v2_b0", 0.0).eval()
    path = module_folder / "pvt_v2_b0.pth"
    state = to_official_pvt_names(source.body.state_dict())
    assert any(k.startswith("block3.") for k in state) and any("dwconv.dwconv" in k for k in state)
    torch.save(state, path)
    return source, path, state


def test_official_pvt_file_loads_through_timm_filter(official_pvt_file):
    source, path, _ = official_pvt_file
    target = PVTBackbone("pvt_v2_b0", 0.0).eval()
    load_pvt_v2_weights(target, path)
    images = torch.randn(1, 3, 64, 64)
    for a, b in zip(source(images), target(images)):
        assert torch.equal(a, b)


def test_wrapped_pvt_file_loads_too(official_pvt_file, tmp_path):
    source, _, state = official_pvt_file
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": state}, wrapped)
    target = PVTBackbone("pvt_v2_b0", 0.0)
    load_pvt_v2_weights(target, wrapped)
    assert torch.equal(target.body.stages[3].norm.weight, source.body.stages[3].norm.weight)


def test_pvt_file_for_other_variant_lists_keys(official_pvt_file):
    _, path, _ = official_pvt_file
    with pytest.raises(WeightsMismatchError) as error:
        load_pvt_v2_weights(PVTBackbone("pvt_v2_b1", 0.0), path)
    assert "wrong shapes" in str(error.value) and "stages.0" in str(error.value)


def test_pvt_file_missing_and_unexpected_keys_are_named(official_pvt_file, tmp_path):
    _, _, state = official_pvt_file
    broken = dict(state)
    del broken["norm4.weight"]
    broken["block1.0.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(WeightsMismatchError, match=r"missing keys: stages\.3\.norm\.weight") as error:
        load_pvt_v2_weights(PVTBackbone("pvt_v2_b0", 0.0), path)
    assert "unexpected keys: stages.0.blocks.0.extra.weight" in str(error.value)


TORCHVGGISH_SHAPES = {
    "features.0": (64, 1), "features.3": (128, 64), "features.6": (256, 128), "features.8": (256, 256),
    "features.11": (512, 256), "features.13": (512, 512),
}


def torchvggish_state() -> dict:
    """A state dict laid out like vggish-10086976.pth (spec section 4): 18 tensors."""
    torch.manual_seed(4)
    state = {}
    for name, (out_ch, in_ch) in TORCHVGGISH_SHAPES.items():
        state[f"{name}.weight"], state[f"{name}.bias"] = torch.randn(out_ch, in_ch, 3, 3) * 0.05, torch.randn(out_ch)
    for name, (out_f, in_f) in {"embeddings.0": (4096, 12288), "embeddings.2": (4096, 4096),
                                "embeddings.4": (128, 4096)}.items():
        state[f"{name}.weight"], state[f"{name}.bias"] = torch.randn(out_f, in_f) * 0.01, torch.randn(out_f)
    return state


def test_torchvggish_file_loads(tmp_path):
    state = torchvggish_state()
    assert len(state) == 18 and sum(v.numel() for v in state.values()) == 72_141_184
    path = tmp_path / "vggish-10086976.pth"
    torch.save(state, path)
    vggish = VGGish()
    load_vggish_weights(vggish, path)
    assert torch.equal(vggish.embeddings[4].weight, state["embeddings.4.weight"])
    state["embeddings.4.weight"] = torch.zeros(64, 4096)
    torch.save(state, path)
    with pytest.raises(WeightsMismatchError, match=r"embeddings\.4\.weight \(64, 4096\) != \(128, 4096\)"):
        load_vggish_weights(VGGish(), path)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = small_model(mixer_bias="per_token").eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, epoch=3)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind
    payload = load_checkpoint(path)
    assert payload["epoch"] == 3 and payload["config"]["mixer_bias"] == "per_token"
    predictor = AffordancePredictor.from_checkpoint(path, device="cpu")
    assert predictor.config == model.config
    images, audio = torch.randn(1, 3, SMALL_IMAGE, SMALL_IMAGE), torch.randn(1, 20, 1, 96, 64)
    with torch.no_grad():
        for a, b in zip(model(images, audio), predictor.backend.model(images, audio)):
            assert torch.equal(a, b)


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    model = small_model()
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, epoch=1)
    before = path.read_bytes()
    with pytest.raises((AttributeError, pickle.PicklingError)):  # which one depends on the pickler
        save_checkpoint(path, model, epoch=2, unpicklable=lambda: None)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_mismatched_checkpoint_lists_keys(tmp_path):
    model = small_model()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    payload = torch.load(path, weights_only=True)
    del payload["model"]["mask_attention.out_proj.weight"]
    payload["model"]["decoders.function.stray"] = torch.zeros(1)
    torch.save(payload, path)
    with pytest.raises(WeightsMismatchError, match="missing keys: mask_attention.out_proj.weight") as error:
        AffordancePredictor.from_checkpoint(path, device="cpu")
    assert "unexpected keys: decoders.function.stray" in str(error.value)


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_untrusted_pickles_and_foreign_files_are_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"model": Payload()}, f, protocol=2)
    with pytest.raises(ValueError, match="cannot read"):
        load_checkpoint(evil)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(ValueError, match="not an avag_ros AVAGFormer checkpoint"):
        AffordancePredictor.from_checkpoint(plain)
    with pytest.raises(InputFileNotFoundError, match="not found"):
        AffordancePredictor.from_checkpoint(tmp_path / "missing.pt")


def test_format_1_checkpoint_with_vggish_keys_still_loads(tmp_path):
    model = small_model().eval()
    path = tmp_path / "v1.pt"
    save_checkpoint(path, model)
    payload = torch.load(path, weights_only=True)
    payload["version"] = 1
    payload["model"] = {k.replace("audio_encoder.", "vggish.", 1): v for k, v in payload["model"].items()}
    assert any(k.startswith("vggish.") for k in payload["model"])
    torch.save(payload, path)
    predictor = AffordancePredictor.from_checkpoint(path, device="cpu")
    assert torch.equal(predictor.backend.model.audio_encoder.embeddings[4].weight, model.audio_encoder.embeddings[4].weight)
    payload["version"] = 7
    torch.save(payload, path)
    with pytest.raises(ValueError, match="checkpoint version 7"):
        load_checkpoint(path)
