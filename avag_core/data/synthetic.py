"""A synthetic audio-visual affordance task in which the sound decides the answer.

Every scene holds two or three procedurally drawn objects of different categories, each with a function part
and, for most categories, a supporting (dependency) part, over a cluttered background. Every category has its
own shape, typical colours and acoustic signature (tone, noise band, rhythm). One scene is stored once per
category it contains, with that category's masks, so the same picture appears with different sounds and
different targets: a model that ignores the audio cannot tell which object to segment.

Files follow the AVAGD release layout, `<object>/<affordance>/<stem>.jpg` with `<stem>_Function_mask.png`
and `<stem>_Dependency_mask.png`, and the category's sound clips beside them. `splits.json` at the root
names the seen and unseen categories.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import soundfile

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Sound:
    tones_hz: tuple[float, ...] = ()
    noise_band_hz: tuple[float, float] | None = None
    rhythm_hz: float = 0.0  # 0: continuous
    burst_s: float = 0.1


@dataclass(frozen=True)
class Category:
    object: str
    affordance: str
    shape: str
    sound: Sound
    hue: float  # degrees; the category's typical colours derive from it (see `_part_colours`)
    seen: bool = True

    @property
    def folder(self) -> str:
        return f"{self.object}/{self.affordance}"


CATEGORIES = (
    Category("hammer", "hit", "hammer", Sound(noise_band_hz=(150, 1200), rhythm_hz=2.0, burst_s=0.06), 0),
    Category("bottle_cap", "twist", "bottle", Sound(noise_band_hz=(2500, 5000), rhythm_hz=11.0, burst_s=0.02), 45),
    Category("switch", "turn_on_or_off", "switch", Sound(tones_hz=(3200,), noise_band_hz=(3000, 6500),
                                                         rhythm_hz=1.2, burst_s=0.015), 90),
    Category("drawer", "open_or_close", "drawer", Sound(noise_band_hz=(90, 500)), 135),
    Category("knife", "cut", "knife", Sound(noise_band_hz=(4500, 7500), rhythm_hz=3.0, burst_s=0.22), 180),
    Category("mug", "pour", "mug", Sound(tones_hz=(520, 780), noise_band_hz=(900, 2200), rhythm_hz=0.0), 225),
    Category("lamp", "turn_on", "lamp", Sound(tones_hz=(120, 240, 360)), 270),
    Category("key", "open", "key", Sound(tones_hz=(1800,), rhythm_hz=6.0, burst_s=0.05), 315),
    Category("bell", "ring", "bell", Sound(tones_hz=(880, 1760, 2640), rhythm_hz=1.0, burst_s=0.6), 20, seen=False),
    Category("faucet", "turn_on_or_off", "faucet", Sound(noise_band_hz=(700, 3500)), 200, seen=False),
    Category("scissors", "cut", "scissors", Sound(noise_band_hz=(3000, 6000), rhythm_hz=5.0, burst_s=0.07), 110,
             seen=False),
)

# Part outlines in a unit frame ([-1, 1], y down): (role, polygon). Later parts are drawn over earlier ones.
# Function parts are kept at least ~0.4 units thick: the head predicts at stride 8, so at the small images a CPU
# can train on, a thinner part would be below one output cell.
Polygon = list[tuple[float, float]]


def _rect(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _ellipse(cx: float, cy: float, rx: float, ry: float, start: float = 0, end: float = 360) -> Polygon:
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
            for a in np.linspace(start, end, 24, endpoint=end - start < 360)]


SHAPES: dict[str, list[tuple[str, Polygon]]] = {
    "hammer": [("dependency", _rect(-0.22, -0.35, 0.22, 1.0)), ("function", _rect(-0.85, -0.95, 0.85, -0.35))],
    "bottle": [("dependency", _rect(-0.6, -0.3, 0.6, 1.0)), ("body", _rect(-0.25, -0.5, 0.25, -0.3)),
               ("function", _rect(-0.45, -1.0, 0.45, -0.5))],
    "switch": [("body", _rect(-0.85, -0.95, 0.85, 0.95)), ("function", _rect(-0.4, -0.6, 0.4, 0.35))],
    "drawer": [("body", _rect(-1.0, -0.75, 1.0, 0.75)), ("function", _rect(-0.65, -0.25, 0.65, 0.25))],
    "knife": [("dependency", _rect(-0.25, 0.2, 0.25, 1.0)),
              ("function", [(-0.25, 0.2), (0.25, 0.2), (0.25, -0.55), (0.0, -1.0), (-0.25, -0.3)])],
    "mug": [("dependency", _rect(-0.8, -0.75, 0.25, 0.9)),
            ("function", _ellipse(0.25, 0.1, 0.7, 0.6, -90, 90) + _ellipse(0.25, 0.1, 0.3, 0.25, 90, -90))],
    "lamp": [("dependency", _rect(-0.65, 0.65, 0.65, 1.0)), ("body", _rect(-0.1, -0.2, 0.1, 0.65)),
             ("function", [(-0.4, -0.95), (0.4, -0.95), (0.85, -0.2), (-0.85, -0.2)])],
    "key": [("dependency", _ellipse(0, -0.55, 0.45, 0.45)),
            ("function", _rect(-0.2, -0.15, 0.2, 1.0) + [(0.2, 0.6), (0.5, 0.6), (0.5, 0.95), (0.2, 0.95)])],
    "bell": [("dependency", _ellipse(0, -0.75, 0.25, 0.25)),
             ("function", [(-0.3, -0.55), (0.3, -0.55), (0.55, 0.2), (0.8, 0.75), (-0.8, 0.75), (-0.55, 0.2)])],
    "faucet": [("dependency", _rect(-0.25, -0.2, 0.25, 1.0)), ("function", _rect(-0.25, -0.6, 0.95, -0.2)),
               ("function", _rect(0.55, -0.6, 0.95, 0.1))],
    "scissors": [("dependency", _ellipse(-0.4, 0.6, 0.35, 0.35)), ("dependency", _ellipse(0.4, 0.6, 0.35, 0.35)),
                 ("function", [(-0.4, 0.3), (-0.05, 0.3), (0.2, -1.0), (-0.1, -1.0)]),
                 ("function", [(0.05, 0.3), (0.4, 0.3), (0.1, -1.0), (-0.2, -1.0)])],
}

ROLES = ("body", "dependency", "function")


@dataclass
class Scene:
    image: np.ndarray  # HxWx3 uint8 RGB
    categories: list[Category]
    function_masks: list[np.ndarray]  # bool HxW, one per object
    dependency_masks: list[np.ndarray]
    object_masks: list[np.ndarray]  # every part of the object


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(30, 256, 3))


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    pixel = np.array([[[hue / 2 % 180, saturation * 255, value * 255]]], np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(pixel, cv2.COLOR_HSV2RGB)[0, 0])


def _part_colours(rng: np.random.Generator, category: Category) -> dict[str, tuple[int, int, int]]:
    """Each category has typical colours, as real tools do (a red hammer head, a steel blade), jittered per object:
    the function part in the category's hue, the dependency part in the opposite hue and darker, the body grey.
    Shapes alone would also do, but a model trained from scratch on two CPU cores needs the easier cue to learn
    within the budget; the sound still has to say which object is meant."""
    jitter = rng.uniform(-12, 12)
    return {"function": _hsv_to_rgb(category.hue + jitter, rng.uniform(0.65, 0.9), rng.uniform(0.8, 1.0)),
            "dependency": _hsv_to_rgb(category.hue + 180 + jitter, rng.uniform(0.5, 0.8), rng.uniform(0.4, 0.6)),
            "body": _hsv_to_rgb(0, 0, rng.uniform(0.45, 0.75))}


def _draw_background(rng: np.random.Generator, size: int) -> np.ndarray:
    top, bottom = rng.integers(60, 230, 3), rng.integers(60, 230, 3)
    ramp = np.linspace(0, 1, size)[:, None, None]
    image = ((1 - ramp) * top + ramp * bottom).repeat(size, axis=1).astype(np.uint8)
    for _ in range(rng.integers(2, 7)):  # clutter: lines, blobs and boxes that are nobody's part
        colour = _random_colour(rng)
        kind = rng.integers(3)
        p = rng.integers(0, size, 4)
        if kind == 0:
            cv2.line(image, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), colour, int(rng.integers(1, 4)))
        elif kind == 1:
            cv2.circle(image, (int(p[0]), int(p[1])), int(rng.integers(3, size // 14)), colour, -1)
        else:
            cv2.rectangle(image, (int(p[0]), int(p[1])), (int(p[0] + p[2] // 10), int(p[1] + p[3] // 10)), colour, -1)
    noise = rng.normal(0, 6, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def render_scene(rng: np.random.Generator, size: int = 256, categories: list[Category] | None = None) -> Scene:
    """Draw 2-3 objects of distinct categories, one per cell of a 2x2 grid, over a cluttered background."""
    if categories is None:
        count = int(rng.integers(2, 4))
        categories = [CATEGORIES[i] for i in rng.choice(len(CATEGORIES), count, replace=False)]
    if not 1 <= len(categories) <= 4:
        raise ValueError(f"a scene holds 1 to 4 objects, got {len(categories)}")
    image = _draw_background(rng, size)
    labels = np.zeros((size, size), np.int32)  # 0 background, else 1 + 3 * object + role
    cells = rng.permutation(4)[:len(categories)]
    cell = size / 2
    for index, (category, cell_index) in enumerate(zip(categories, cells)):
        scale = cell * rng.uniform(0.36, 0.46)
        centre = np.array([(cell_index % 2 + 0.5) * cell, (cell_index // 2 + 0.5) * cell])
        centre += rng.uniform(-0.04, 0.04, 2) * cell
        angle = math.radians(rng.uniform(-25, 25))
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        colours = _part_colours(rng, category)
        for role, polygon in SHAPES[category.shape]:
            points = (np.asarray(polygon) @ rotation.T * scale + centre).round().astype(np.int32)
            cv2.fillPoly(image, [points], colours[role], lineType=cv2.LINE_AA)
            cv2.fillPoly(labels, [points], 1 + 3 * index + ROLES.index(role))
    function_masks = [labels == 1 + 3 * i + 2 for i in range(len(categories))]
    dependency_masks = [labels == 1 + 3 * i + 1 for i in range(len(categories))]
    object_masks = [(labels - 1) // 3 == i for i in range(len(categories))]
    return Scene(image, list(categories), function_masks, dependency_masks, object_masks)


def _band_noise(rng: np.random.Generator, count: int, low: float, high: float) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(count))
    freqs = np.fft.rfftfreq(count, 1 / SAMPLE_RATE)
    spectrum[(freqs < low) | (freqs > high)] = 0
    noise = np.fft.irfft(spectrum, count)
    return noise / (np.abs(noise).max() + 1e-9)


def synthesize_sound(rng: np.random.Generator, sound: Sound, seconds: float) -> np.ndarray:
    """A clip with the category's signature, jittered in pitch, tempo and level, over faint room noise."""
    count = int(seconds * SAMPLE_RATE)
    t = np.arange(count) / SAMPLE_RATE
    signal = np.zeros(count)
    pitch = rng.uniform(0.95, 1.05)
    for k, hz in enumerate(sound.tones_hz):
        signal += np.sin(2 * np.pi * hz * pitch * t + rng.uniform(0, 2 * np.pi)) / (k + 1)
    if sound.noise_band_hz:
        signal += 1.5 * _band_noise(rng, count, *(f * pitch for f in sound.noise_band_hz))
    if sound.rhythm_hz:
        period = 1 / (sound.rhythm_hz * rng.uniform(0.85, 1.15))
        phase = (t + rng.uniform(0, period)) % period
        envelope = np.exp(-phase / (sound.burst_s / 3)) * (phase < sound.burst_s * 2)
    else:
        envelope = 0.7 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t)
    signal = signal * envelope
    signal = signal / (np.abs(signal).max() + 1e-9) * rng.uniform(0.3, 0.8)
    return (signal + rng.normal(0, 0.003, count)).astype(np.float32)


@dataclass(frozen=True)
class Pair:
    """One sample in memory: a picture, the sound of one of its objects, and that object's masks."""
    image: np.ndarray
    sound: np.ndarray  # float32 mono at SAMPLE_RATE
    function_mask: np.ndarray
    dependency_mask: np.ndarray
    category: Category


def sample_pairs(seed: int, count: int, size: int = 128, seconds: float = 2.0, seen: bool = True) -> list[Pair]:
    """`count` pairs drawn like the dataset's (each scene once per object, with that object's own new sound) from
    the seen categories (or the unseen ones), without writing files: for calibration and for accuracy checks.
    Deterministic per arguments."""
    rng = np.random.default_rng(seed)
    pool = [c for c in CATEGORIES if c.seen == seen]
    pairs: list[Pair] = []
    while len(pairs) < count:
        chosen = rng.choice(len(pool), min(len(pool), int(rng.integers(2, 4))), replace=False)
        scene = render_scene(rng, size, [pool[i] for i in chosen])
        for category, function, dependency in zip(scene.categories, scene.function_masks, scene.dependency_masks):
            if len(pairs) < count:
                pairs.append(Pair(scene.image, synthesize_sound(rng, category.sound, seconds), function,
                                  dependency, category))
    return pairs


def _save_jpeg(path: Path, image: np.ndarray) -> None:
    cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tofile(str(path))


def _save_mask(path: Path, mask: np.ndarray) -> None:
    cv2.imencode(".png", mask.astype(np.uint8) * 255)[1].tofile(str(path))


def write_dataset(out: str | Path, num_samples: int, seed: int = 0, size: int = 256,
                  clips_per_category: int = 12) -> dict:
    """Write `num_samples` (image, category) samples and the categories' clips in the AVAGD layout.

    Deterministic for a given (num_samples, seed, size, clips_per_category). Returns a summary dict.
    """
    if num_samples <= 0 or size < 32 or clips_per_category <= 0:
        raise ValueError("num_samples and clips_per_category must be positive and size at least 32")
    out = Path(out)
    rng = np.random.default_rng(seed)
    for category in CATEGORIES:
        folder = out / category.folder
        folder.mkdir(parents=True, exist_ok=True)
        for clip in range(clips_per_category):
            seconds = float(rng.uniform(1.0, 4.0))
            soundfile.write(folder / f"synth{clip:03d}_0.00_{seconds:.2f}.wav",
                            synthesize_sound(rng, category.sound, seconds), SAMPLE_RATE, subtype="PCM_16")
    written = 0
    scene_index = 0
    while written < num_samples:
        scene = render_scene(rng, size)
        stem = f"synth_scene{scene_index:06d}"
        for category, function, dependency in zip(scene.categories, scene.function_masks, scene.dependency_masks):
            if written == num_samples:
                break
            folder = out / category.folder
            _save_jpeg(folder / f"{stem}.jpg", scene.image)
            _save_mask(folder / f"{stem}_Function_mask.png", function)
            _save_mask(folder / f"{stem}_Dependency_mask.png", dependency)
            written += 1
        scene_index += 1
    splits = {"seen": [f"{c.affordance.replace('_', ' ')}@{c.object.replace('_', ' ')}" for c in CATEGORIES if c.seen],
              "unseen": [f"{c.affordance.replace('_', ' ')}@{c.object.replace('_', ' ')}"
                         for c in CATEGORIES if not c.seen]}
    (out / "splits.json").write_text(json.dumps(splits, indent=2) + "\n")
    return {"samples": written, "scenes": scene_index, "categories": len(CATEGORIES),
            "clips": clips_per_category * len(CATEGORIES)}
