"""Demo that needs no data, camera or microphone: make one synthetic scene and sound, then run the predictor CLI.

    python -m avag_core.demo [--out demo_output] [--checkpoint CKPT]

Without a checkpoint the `avagformer_b0` preset runs with random weights, so the masks only show the plumbing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile

from . import predict
from .data.synthetic import SAMPLE_RATE, render_scene, synthesize_sound
from .image import save_png


def make_sample(out: Path, seed: int = 0) -> tuple[Path, Path, str]:
    """Write scene.jpg-like inputs (PNG image, WAV sound) for the first object of a synthetic scene."""
    rng = np.random.default_rng(seed)
    scene = render_scene(rng, size=320)
    target = scene.categories[0]
    out.mkdir(parents=True, exist_ok=True)
    image_path, audio_path = out / "scene.png", out / f"{target.object}_{target.affordance}.wav"
    save_png(image_path, scene.image)
    save_png(out / "ground_truth_function_mask.png", scene.function_masks[0].astype(np.uint8) * 255)
    soundfile.write(audio_path, synthesize_sound(rng, target.sound, 2.5), SAMPLE_RATE)
    return image_path, audio_path, f"{target.affordance.replace('_', ' ')}@{target.object.replace('_', ' ')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avag_core.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_output", help="folder for the sample and the masks")
    parser.add_argument("--checkpoint", help="trained checkpoint; default: avagformer_b0 with random weights")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    image_path, audio_path, category = make_sample(out / "input", args.seed)
    print(f"sample: {image_path} with the sound of '{category}' ({audio_path.name})")
    source = ["--checkpoint", args.checkpoint] if args.checkpoint else ["--model", "avagformer_b0"]
    return predict.main(["--image", str(image_path), "--audio", str(audio_path), *source, "--out", str(out)])


if __name__ == "__main__":
    sys.exit(main())
