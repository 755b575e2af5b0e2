import math

import pytest
import torch

from avag_core.modeling import reference
from avag_core.modeling.backbone import PVTBackbone
from avag_core.modeling.compressor import MaskCompressor
from avag_core.modeling.decoder import CrossAttentionDecoder
from avag_core.modeling.deformable_encoder import (DeformableEncoder, MultiScaleDeformableAttention, sample_by_gather,
                                                   sample_by_grid)
from avag_core.modeling.fpn import SimpleFPN
from avag_core.modeling.mask_attention import MaskConditionedAttention
from avag_core.modeling.mask_head import QueryConditionedMaskHead
from avag_core.modeling.mixer import CrossModalMixer, SemanticFusionBlock
from avag_core.modeling.position_encoding import sine_position_encoding
from avag_core.modeling.query_generator import QueryGenerator
from avag_core.modeling.vggish import VGGish

from conftest import LIGHT_AUDIO, SMALL_IMAGE, small_model


def random_audio(batch: int, windows: int = 20, real: int = 3) -> torch.Tensor:
    log_mel = torch.zeros(batch, windows, 1, 96, 64)
    log_mel[:, :real] = torch.randn(batch, real, 1, 96, 64)
    return log_mel


def test_backbone_gives_strides_8_16_32():
    feats = PVTBackbone("pvt_v2_b0", 0.0)(torch.randn(2, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(2, 64, 8, 12), (2, 160, 4, 6), (2, 256, 2, 3)]


def test_vggish_shape_and_nonnegative():
    out = VGGish()(torch.randn(3, 1, 96, 64))
    assert out.shape == (3, 128) and out.dtype == torch.float32 and (out >= 0).all()


def test_position_encoding_matches_formula():
    pos = sine_position_encoding(3, 5, 256, torch.device("cpu"))
    assert pos.shape == (256, 3, 5)
    i, j, k = 2, 4, 7  # odd channel k: cosine; y uses row index + 1
    omega = 10000 ** (-2 * (k // 2) / 128)
    assert pos[k, i, j].item() == pytest.approx(math.cos((i + 1) * omega), abs=1e-6)
    assert pos[128 + 6, i, j].item() == pytest.approx(math.sin((j + 1) * 10000 ** (-6 / 128)), abs=1e-6)


def test_encoder_fpn_mixer_decoder_shapes():
    torch.manual_seed(0)
    feats = [torch.randn(2, c, s, s) for c, s in ((64, 8), (160, 4), (256, 2))]
    memory = DeformableEncoder([64, 160, 256], layers=2, ffn_dim=64)(feats)
    assert [tuple(m.shape) for m in memory] == [(2, 256, 8, 8), (2, 256, 4, 4), (2, 256, 2, 2)]
    maps = SimpleFPN()(memory)
    assert [tuple(m.shape) for m in maps] == [(2, 128, 8, 8), (2, 128, 4, 4), (2, 128, 2, 2)]
    mixed = CrossModalMixer()(maps, torch.randn(2, 20, 256))
    for task in ("function", "dependency"):
        assert [tuple(m.shape) for m in mixed[task].visual] == [tuple(m.shape) for m in maps]
        assert [tuple(a.shape) for a in mixed[task].audio] == [(2, 20, 256)] * 3
    decoded = CrossAttentionDecoder()(mixed["function"].visual, mixed["function"].audio)
    assert decoded.shape == (2, 16, 8, 8)


def test_query_generator_and_compressor_shapes():
    queries = QueryGenerator(num_queries=30, layers=2)(torch.randn(2, 80, 256))
    assert queries.shape == (2, 30, 256)
    assert MaskCompressor(num_queries=30)(torch.randn(2, 30, 8, 8)).shape == (2, 1, 64, 64)


def naive_deformable_sample(value, shapes, locations, weights):
    """Bilinear interpolation written out point by point, zero outside the map, align_corners=False."""
    batch, _, heads, head_dim = value.shape
    num_queries = locations.shape[1]
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(batch, num_queries, heads, head_dim, dtype=torch.float64)
    for b in range(batch):
        for q in range(num_queries):
            for h in range(heads):
                for level, (height, width) in enumerate(shapes):
                    for p in range(locations.shape[4]):
                        x = locations[b, q, h, level, p, 0].item() * width - 0.5
                        y = locations[b, q, h, level, p, 1].item() * height - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        sample = torch.zeros(head_dim, dtype=torch.float64)
                        for cx, cy in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                            if 0 <= cx < width and 0 <= cy < height:
                                bilinear = (1 - abs(x - cx)) * (1 - abs(y - cy))
                                sample += bilinear * value[b, starts[level] + cy * width + cx, h].double()
                        out[b, q, h] += weights[b, q, h, level, p].item() * sample
    return out.flatten(2)


def test_deformable_sampling_equals_naive_loop_and_grid_sample():
    torch.manual_seed(0)
    shapes = [(4, 5), (2, 3), (1, 2)]
    total = sum(h * w for h, w in shapes)
    value = torch.randn(2, total, 2, 3)
    # Include points far outside the maps and exactly on pixel centres.
    locations = torch.rand(2, 7, 2, 3, 2, 2) * 1.6 - 0.3
    locations[0, 0, 0, 0, 0] = torch.tensor([0.5 / 5, 1.5 / 4])
    weights = torch.rand(2, 7, 2, 3, 2)
    naive = naive_deformable_sample(value, shapes, locations, weights)
    for form in (sample_by_gather, sample_by_grid):
        assert torch.allclose(form(value, shapes, locations, weights).double(), naive, atol=1e-5)


def test_deformable_sampling_gradients_agree_between_forms():
    torch.manual_seed(1)
    shapes = [(6, 6), (3, 3)]
    value = torch.randn(1, 45, 2, 4, requires_grad=True)
    locations = (torch.rand(1, 10, 2, 2, 3, 2) * 1.2 - 0.1).requires_grad_()
    weights = torch.rand(1, 10, 2, 2, 3, requires_grad=True)
    grads = [torch.autograd.grad(f(value, shapes, locations, weights).square().sum(), (value, locations, weights))
             for f in (sample_by_gather, sample_by_grid)]
    for fast, slow in zip(*grads):
        assert torch.allclose(fast, slow, rtol=1e-4, atol=1e-4)


def test_msda_initial_offsets_point_in_eight_directions():
    attn = MultiScaleDeformableAttention(dim=256, levels=3, heads=8, points=4)
    offsets = attn.sampling_offsets.bias.view(8, 3, 4, 2)
    assert torch.allclose(offsets[0, 0, :, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]))  # head 0 looks along +x
    assert torch.allclose(offsets[:, :, 0].abs().amax(-1), torch.ones(8, 3))


@pytest.mark.parametrize("size", [(8, 8), (1, 5), (2, 3), (3, 7), (5, 4)])
def test_mask_head_equals_straightforward_form(size):
    torch.manual_seed(0)
    head = QueryConditionedMaskHead()
    features, queries = torch.randn(2, 16, *size), torch.randn(2, 37, 256)
    assert torch.allclose(head(features, queries), reference.mask_head(head, features, queries), atol=1e-5)


def test_mask_head_chunks_agree(monkeypatch):
    import avag_core.modeling.mask_head as mask_head_module
    torch.manual_seed(0)
    head = QueryConditionedMaskHead()
    features, queries = torch.randn(1, 16, 6, 6), torch.randn(1, 11, 256)
    whole = head(features, queries)
    monkeypatch.setattr(mask_head_module, "CHUNK_ELEMENTS", 16 * 36 * 3)  # three queries per chunk
    assert torch.allclose(head(features, queries), whole, atol=1e-6)


def test_mask_attention_equals_straightforward_form(monkeypatch):
    import avag_core.modeling.mask_attention as mca_module
    torch.manual_seed(0)
    module = MaskConditionedAttention()
    features, mask = torch.randn(2, 16, 9, 7), torch.randn(2, 1, 9, 7) * 4
    expected = reference.mask_attention(module, features, mask)
    assert torch.allclose(module(features, mask), expected, atol=1e-5)
    monkeypatch.setattr(mca_module, "ROW_CHUNK", 10)
    assert torch.allclose(module(features, mask), expected, atol=1e-5)


@pytest.mark.parametrize("bias", ["per_head", "per_token"])
@pytest.mark.parametrize("tokens, pixels", [(1, 7), (2, 4096), (20, 64)])
def test_fusion_attention_equals_straightforward_form(bias, tokens, pixels):
    torch.manual_seed(0)
    block = SemanticFusionBlock(bias=bias)
    for linear in (block.image_key, block.image_value, block.image_query, block.out_proj_image):
        torch.nn.init.normal_(linear.bias)  # default init biases are small; the rewrite moves them around
    vision = torch.randn(2, pixels, 256, requires_grad=True)
    audio = torch.randn(2, tokens, 256, requires_grad=True)
    prompts = torch.randn(256), torch.randn(256)
    fast = block(vision, audio, *prompts)
    fast_grads = torch.autograd.grad(sum(o.square().sum() for o in fast), [vision, audio, *block.parameters()])
    block.audio_attends_to_vision = lambda a, v, b: reference.audio_attends_to_vision(block, a, v, b)
    block.vision_attends_to_audio = lambda v, a, b: reference.vision_attends_to_audio(block, v, a, b)
    slow = block(vision, audio, *prompts)
    slow_grads = torch.autograd.grad(sum(o.square().sum() for o in slow), [vision, audio, *block.parameters()])
    for a, b in zip(fast, slow):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    # Each gradient against its own size; the floor, a millionth of the largest, is for those that are zero but
    # for rounding (the key bias, which softmax cancels)
    floor = 1e-6 * max(g.abs().max() for g in slow_grads)
    for a, b in zip(fast_grads, slow_grads):  # training runs the rewrite too
        assert (a - b).abs().max() <= 1e-4 * b.abs().max() + floor


def test_compressor_equals_straightforward_form():
    torch.manual_seed(0)
    compressor = MaskCompressor(num_queries=12).eval()
    with torch.no_grad():
        for norm in (m for m in compressor.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            norm.running_mean.normal_()
        torch.nn.init.normal_(compressor.predict.bias)
    logits = torch.randn(2, 12, 5, 7)
    fast, slow = compressor(logits), reference.compress(compressor, logits)
    assert fast.shape == slow.shape == (2, 1, 40, 56)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_full_model_output_shapes_and_dtypes(tiny_model):
    with torch.no_grad():
        out = tiny_model(torch.randn(2, 3, SMALL_IMAGE, SMALL_IMAGE), random_audio(2))
    queries = tiny_model.config.num_queries
    assert out.function_logits.shape == out.dependency_logits.shape == (2, 1, SMALL_IMAGE, SMALL_IMAGE)
    assert out.function_query_logits.shape == out.dependency_query_logits.shape == (2, queries, 8, 8)
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in out)


def test_rewritten_model_equals_straightforward_model(tiny_model):
    images, audio = torch.randn(2, 3, SMALL_IMAGE, SMALL_IMAGE), random_audio(2, real=4)
    with torch.no_grad():
        fast = tiny_model(images, audio)
        with reference.straightforward_forms(tiny_model):
            slow = tiny_model(images, audio)
        again = tiny_model(images, audio)
    for a, b, c in zip(fast, slow, again):
        assert torch.allclose(a, b, atol=1e-4)
        assert torch.equal(a, c)  # the context manager restored the fast forms


def test_embed_audio_computes_padding_once_but_equals_all_windows(tiny_model):
    audio = random_audio(2, real=5)
    audio[1, 5:] = 0.0
    audio[1, 2] = 0.0  # a padding-valued window in the middle is still just padding
    with torch.no_grad():
        assert torch.allclose(tiny_model.embed_audio(audio), reference.embed_audio(tiny_model, audio), atol=1e-6)
        all_padding = torch.zeros(1, 20, 1, 96, 64)
        assert torch.allclose(tiny_model.embed_audio(all_padding), reference.embed_audio(tiny_model, all_padding))


# The frozen VGGish once, the trainable light encoder once: VGGish's forward and backward cost most of this test.
@pytest.mark.parametrize("mixer_bias, audio", [("per_head", {}), ("per_token", LIGHT_AUDIO)],
                         ids=["per_head-frozen_vggish", "per_token-light_audio"])
def test_gradients_reach_every_trainable_parameter(mixer_bias, audio):
    model = small_model(mixer_bias=mixer_bias, **audio).train()
    out = model(torch.randn(2, 3, SMALL_IMAGE, SMALL_IMAGE), random_audio(2))
    (out.function_logits.mean() + out.dependency_logits.mean() + out.function_query_logits.mean()
     + out.dependency_query_logits.mean()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    encoder = list(model.audio_encoder.parameters())
    if audio:
        assert all(p.requires_grad and p.grad is not None for p in encoder)
    else:
        assert all(p.grad is None for p in encoder)
        assert not any(p.requires_grad for p in encoder)
    bias_grad = model.mixer.fusion.audio_bias_mlp[2].weight.grad.abs().max().item()
    if mixer_bias == "per_head":
        assert bias_grad < 1e-6  # softmax cancels a per-head constant: the released code's bias is inert
    else:
        assert bias_grad > 1e-6


@pytest.mark.parametrize("mixer_bias, changes", [("per_head", False), ("per_token", True)])
def test_mixer_bias_is_inert_only_in_released_form(mixer_bias, changes):
    torch.manual_seed(0)
    mixer = CrossModalMixer(bias=mixer_bias).eval()
    maps = [torch.randn(1, 128, s, s) for s in (4, 2, 1)]
    audio = torch.randn(1, 20, 256)
    before = mixer(maps, audio)["function"].visual[0]
    with torch.no_grad():
        for mlp in (mixer.fusion.audio_bias_mlp, mixer.fusion.image_bias_mlp):
            mlp[2].weight.mul_(50).add_(1)
    after = mixer(maps, audio)["function"].visual[0]
    assert (not torch.allclose(before, after, atol=1e-4)) == changes


def test_unknown_preset_and_bad_config_are_rejected():
    from avag_core import build_model
    with pytest.raises(ValueError, match="unknown model preset"):
        build_model("avagformer_b9")
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model("avagformer_b0", image_size=100)
    with pytest.raises(ValueError, match="mixer_bias"):
        build_model("avagformer_b0", mixer_bias="sometimes")
