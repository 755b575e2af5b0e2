"""The model learns, and what it learns depends on the sound: real training on a few fixed synthetic samples.

No timing asserts; the tests share one small AVAGFormer trained from random initialisation on the CPU with the
shipped recipe (light trainable audio encoder, foreground-prior bias, faster final path, BatchNorm statistics
recomputed before scoring).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avag_core import build_model
from avag_core.audio import audio_to_model_input
from avag_core.data.synthetic import CATEGORIES, SAMPLE_RATE, render_scene, synthesize_sound
from avag_core.data.transforms import apply_joint, evaluation_transform
from avag_core.training.losses import affordance_loss
from avag_core.training.metrics import sample_iou
from avag_core.training.optim import parameter_groups, recalibrate_batch_norm, set_learning_rate

IMAGE_SIZE = 96
STEPS = 180
# pvt_v2_b0 with a one-layer head: small enough to train for STEPS steps in a few minutes on two cores.
SMALL_HEAD = dict(encoder_layers=1, encoder_ffn_dim=256, query_layers=1, num_queries=16)


def recipe_model(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("avagformer_b0", image_size=IMAGE_SIZE, audio_encoder="log_mel_cnn",
                       freeze_audio_encoder=False, foreground_prior=0.01, **SMALL_HEAD, **overrides)


def log_mel(category, rng) -> torch.Tensor:
    return audio_to_model_input(synthesize_sound(rng, category.sound, 2.0), SAMPLE_RATE, 20)


def make_two_scenes() -> list[dict]:
    """Two pictures of two objects each; every picture comes once per object, with that object's sound."""
    rng = np.random.default_rng(7)
    transform = evaluation_transform(IMAGE_SIZE)
    samples = []
    for first, second in ((0, 4), (1, 6)):
        categories = [CATEGORIES[first], CATEGORIES[second]]
        scene = render_scene(rng, size=IMAGE_SIZE, categories=categories)
        for category, function, dependency in zip(categories, scene.function_masks, scene.dependency_masks):
            image, function_mask, dependency_mask = apply_joint(
                transform, torch.from_numpy(scene.image).permute(2, 0, 1), torch.from_numpy(function)[None],
                torch.from_numpy(dependency)[None])
            samples.append({"image": image, "log_mel": log_mel(category, rng), "function": function_mask,
                            "dependency": dependency_mask})
    return samples


@pytest.fixture(scope="module")
def two_scenes():
    return make_two_scenes()


def stack(samples, key):
    return torch.stack([s[key] for s in samples])


@pytest.fixture(scope="module")
def trained(two_scenes):
    model = recipe_model()
    optimizer = torch.optim.AdamW(parameter_groups(model, final_lr_scale=10.0), lr=1e-3, weight_decay=0.01)
    images, audio = stack(two_scenes, "image"), stack(two_scenes, "log_mel")
    function, dependency = stack(two_scenes, "function"), stack(two_scenes, "dependency")
    model.train()
    for step in range(STEPS):
        set_learning_rate(optimizer, 1e-3, warmup_steps=10, step=step)
        loss = affordance_loss(model(images, audio), function, dependency).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # The recipe's clipping (synthetic_b0.yaml, grad_clip 1.0). Without it this run oscillates, and whether
        # step 180 met a good point came down to float rounding: an exact reordering of the deformable
        # sampling's sum left one sample at IoU 0.0. With it every sample stays >= 0.85 from step 150 to 300.
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    recalibrate_batch_norm(model, [None], lambda _: model(images, audio))  # as train.py does before it scores
    return model.eval()


@torch.no_grad()
def function_probability(model, image, audio) -> torch.Tensor:
    return torch.sigmoid(model(image[None], audio[None]).function_logits)[0, 0]


def test_untrained_light_audio_encoder_already_tells_sounds_apart():
    # At the first training step (train mode, random init), clips of 8 categories. A random frozen VGGish gives
    # cosine 0.997-0.9997 between them and a per-dimension spread of 1e-4: it cannot hear. The light encoder
    # gives cosine -0.38 to 0.48 (mean -0.10) and a spread of 1.1 (measured with seed 0).
    model = recipe_model().train()
    rng = np.random.default_rng(0)
    clips = torch.stack([log_mel(c, rng) for c in CATEGORIES[:8]])
    with torch.no_grad():
        embeddings = model.embed_audio(clips)[:, 0]  # the first window of each clip
    cosines = [F.cosine_similarity(embeddings[i], embeddings[j], dim=0).item()
               for i in range(len(clips)) for j in range(i + 1, len(clips))]
    assert max(cosines) < 0.7, cosines
    assert embeddings.std(0).mean() > 0.5


@pytest.mark.slow  # trains for STEPS steps
def test_overfits_a_few_fixed_samples(trained, two_scenes):
    ious = [sample_iou(function_probability(trained, s["image"], s["log_mel"]), s["function"][0])
            for s in two_scenes]
    assert min(ious) >= 0.8, ious


@pytest.mark.slow  # trains for STEPS steps
def test_the_sound_decides_which_object_is_segmented(trained, two_scenes):
    sound_a, sound_b = two_scenes[0], two_scenes[1]  # one picture, two objects, two sounds
    image = sound_a["image"]
    assert torch.equal(image, sound_b["image"])
    target_a, target_b = sound_a["function"][0], sound_b["function"][0]
    heard_a = function_probability(trained, image, sound_a["log_mel"])
    heard_b = function_probability(trained, image, sound_b["log_mel"])
    assert sample_iou(heard_a, target_a) >= 0.7 and sample_iou(heard_b, target_b) >= 0.7
    # Swapped sounds: each target is missed, because the mask moved to the other object.
    assert sample_iou(heard_b, target_a) < 0.2 and sample_iou(heard_a, target_b) < 0.2
