"""Sound events (avag_ros.audio.sound_events): the figures behind the defaults of audio.change_threshold and
audio.min_event_s.

    python bench/sound_events.py [--thresholds 0.7 0.8 1.0] [--checkpoint CKPT] [--scenes 12] [--only change|onset]

1. Change of sound, for each threshold: every clip of the AVAGD sample (../shared/data/avagd-sample, real 44.1 kHz
   recordings) and two synthetic clips of each synthetic category (4 s) are streamed through the node's
   SoundEvents in 20 ms blocks; "false changes" counts the change events within them. Then every pair of
   clips of two different categories, the first 3 s of one straight into the first 3 s of the other: "found"
   is the share given a new event (a change, or a level onset after quiet) between 0.1 s before the join and
   1 s after, and the onset error is that event's distance from the join (median, 90th percentile).
2. How much of a sound the weights need (the default --checkpoint: the demo's): for each seen synthetic
   category, --scenes scenes with that object and two others, its sound after quiet streamed through SoundEvents,
   and for each length the clip the node grounds once the event holds that much audio from its onset (from the
   pre-roll on; the front end zero-pads it to 1 s): the share of function masks right (IoU >= 0.5 with its true
   function part), and the mIoU_f.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avag_core import AffordancePredictor  # noqa: E402
from avag_core.audio import load_audio  # noqa: E402
from avag_core.data.synthetic import CATEGORIES, SAMPLE_RATE, render_scene, synthesize_sound  # noqa: E402
from avag_core.training.metrics import sample_iou  # noqa: E402
from avag_ros.audio.ring_buffer import RingBuffer  # noqa: E402
from avag_ros.audio.sound_events import SoundEvents, clip_span  # noqa: E402
from avag_ros.data import DEMO_CHECKPOINT  # noqa: E402
from avag_ros.parameters import spec  # noqa: E402
from avag_ros.tools.demo import QUIET_RMS  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "avagd-sample"
LENGTHS_S = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 2.0)


def stream_events(audio: np.ndarray, rate: int, threshold: float) -> list:
    """The events the node finds in `audio`, streamed in 20 ms blocks and analysed every 0.1 s."""
    buffer = RingBuffer(rate, 6.0)
    events = SoundEvents(lambda: buffer, itertools.count(1))
    block, seen = int(0.02 * rate), {}
    for index, start in enumerate(range(0, audio.size - block + 1, block)):
        buffer.write(audio[start:start + block], round((start + block - 1) * 1e9 / rate))
        if index % 5 == 4:
            state = events.update(spec("audio.min_level_db").default, spec("audio.hold_s").default, threshold)
            if state.event is not None:
                seen[state.event.id] = state.event
    return list(seen.values())


def real_clips() -> list[tuple[str, np.ndarray, int]]:
    clips = []
    for path in sorted(SAMPLE.glob("*/*/*.mp3")):
        waveform, rate = load_audio(path)
        clips.append((path.parent.parent.name, waveform.mean(axis=1), rate))
    return clips


def synthetic_clips() -> list[tuple[str, np.ndarray, int]]:
    rng = np.random.default_rng(0)
    return [(c.object, synthesize_sound(rng, c.sound, 4.0), SAMPLE_RATE) for c in CATEGORIES for _ in range(2)]


def change_figures(label: str, clips: list[tuple[str, np.ndarray, int]], threshold: float) -> str:
    false_changes = sum(e.cause == "change" for _, audio, rate in clips for e in stream_events(audio, rate, threshold))
    minutes = sum(audio.size / rate for _, audio, rate in clips) / 60
    found, errors_ms = [], []
    for (first, a, rate), (second, b, _) in itertools.permutations(clips, 2):
        if first == second:
            continue
        a, b = a[:3 * rate], b[:3 * rate]
        near = [e for e in stream_events(np.concatenate([a, b]), rate, threshold)
                if -0.1 * rate <= e.onset - a.size <= 1.0 * rate]
        found.append(bool(near))
        if near:
            errors_ms.append(1000 * abs(near[0].onset - a.size) / rate)
    return (f"| {label} | {threshold:g} | {false_changes} in {minutes * 60:.0f} s ({false_changes / minutes:.1f} a "
            f"minute) | {100 * np.mean(found):.0f} % of {len(found)} | {np.median(errors_ms):.0f} / "
            f"{np.percentile(errors_ms, 90):.0f} ms |")


def onset_figures(checkpoint: Path, scenes: int) -> None:
    predictor = AffordancePredictor.from_checkpoint(checkpoint, device="cpu")
    size = predictor.config.image_size
    seen = [c for c in CATEGORIES if c.seen]
    rng = np.random.default_rng(0)
    rows = {length: [] for length in LENGTHS_S}
    window_s = spec("audio.window_s").default
    for category in seen:
        for _ in range(scenes):
            others = [c for c in seen if c is not category]
            chosen = [category] + [others[i] for i in rng.choice(len(others), 2, replace=False)]
            scene = render_scene(rng, size, chosen)
            truth = torch.from_numpy(scene.function_masks[0]).float()
            audio = np.concatenate([rng.normal(0.0, QUIET_RMS, SAMPLE_RATE // 2).astype(np.float32),
                                    synthesize_sound(rng, category.sound, max(LENGTHS_S) + 0.5)])
            event = stream_events(audio, SAMPLE_RATE, 0.0)[0]
            spans = [clip_span(event.clip_start, event.onset + int(length * SAMPLE_RATE), window_s, SAMPLE_RATE)
                     for length in LENGTHS_S]
            clips = [audio[start:end] for start, end in spans]
            for length, prediction in zip(LENGTHS_S, predictor.predict_many(scene.image, clips, SAMPLE_RATE)):
                rows[length].append(sample_iou(torch.from_numpy(prediction.function_mask).float(), truth))
    print(f"\nhow much of a sound {checkpoint.name} needs: {len(seen)} seen synthetic categories x {scenes} scenes,"
          " the node's clip when the event holds that much audio from its onset")
    print("| heard | right (IoU >= 0.5) | mIoU_f |")
    print("|---|---|---|")
    for length, ious in rows.items():
        print(f"| {length:g} s | {100 * np.mean(np.array(ious) >= 0.5):.0f} % | {100 * np.mean(ious):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.7, 0.8, 1.0])
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT)
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--only", choices=("change", "onset"), help="one of the two parts")
    args = parser.parse_args()
    if args.only != "onset":
        change_table(args.thresholds)
    if args.only != "change":
        onset_figures(args.checkpoint, args.scenes)


def change_table(thresholds: list[float]) -> None:
    sets = [("synthetic", synthetic_clips())]
    if SAMPLE.is_dir():
        sets.insert(0, ("AVAGD sample", real_clips()))
    else:
        print(f"{SAMPLE} not found: the real clips are left out")
    print("change of sound: false changes within clips; joins of two categories given a new event within 1 s;")
    print("that event's distance from the join (median / 90th percentile)")
    print("| clips | audio.change_threshold | false changes | joins found | onset error |")
    print("|---|---|---|---|---|")
    for threshold in thresholds:
        for label, clips in sets:
            print(change_figures(label, clips, threshold), flush=True)


if __name__ == "__main__":
    main()
