"""AVAGFormer's PyTorch forward, our exact rewrites vs the released code's straightforward forms: preset x image
size x precision, split into backbone, audio encoder and head. (Backends side by side: bench/inference.py.)

    python bench/forms.py [--presets avagformer_b5 ...] [--sizes 256 512] [--repeats 5] [--device auto]

Each configuration runs in its own process so that peak memory (RSS on the CPU, allocated memory on CUDA) is
its own. Random weights, batch 1, one clip of 4.4 s (the AVAGD median): 5 real windows of the 20. The
`released` rows run the same weights with the straightforward forms of the released code (every window through
VGGish, grid_sample per level, the materialised query mask head, the full mask attention), for comparison on
the same machine.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch

from avag_core import build_model
from avag_core.audio import audio_to_model_input
from avag_core.inference.backends import autocast_for, resolve_device
from avag_core.modeling.reference import straightforward_forms
from timing import median_ms

CLIP_SECONDS = 4.4


def measure(preset: str, size: int, precision: str, device_name: str, repeats: int, released: bool) -> dict:
    torch.manual_seed(0)
    device = resolve_device(device_name)
    model = build_model(preset, image_size=size).to(device).eval()
    images = torch.randn(1, 3, size, size, device=device)
    clip = torch.randn(int(CLIP_SECONDS * 16000)) * 0.1
    log_mel = audio_to_model_input(clip, 16000, model.config.num_audio_windows)[None].to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    context = straightforward_forms(model) if released else torch.no_grad()
    with torch.inference_mode(), autocast_for(device, precision), context:
        features = model.backbone(images)
        embeddings = model.embed_audio(log_mel)
        row = {
            "total": median_ms(lambda: model(images, log_mel), repeats, device),
            "backbone": median_ms(lambda: model.backbone(images), repeats, device),
            "audio": median_ms(lambda: model.embed_audio(log_mel), repeats, device),
            "head": median_ms(lambda: model.decode(model.fpn(model.encoder(features)), embeddings), repeats, device),
        }
    row["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    row["peak_mb"] = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                      else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    row["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["avagformer_b0", "avagformer_b2", "avagformer_b5"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--precisions", nargs="+", default=None, help="default: fp32 on CPU, all three on CUDA")
    parser.add_argument("--released", nargs="*", default=["avagformer_b5"],
                        help="presets also timed with the released code's straightforward forms")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--one", nargs=4, metavar=("PRESET", "SIZE", "PRECISION", "RELEASED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        preset, size, precision, released = args.one
        print(json.dumps(measure(preset, int(size), precision, args.device, args.repeats, released == "1")))
        return
    device = resolve_device(args.device)
    precisions = args.precisions or (["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32"])
    print("| preset | size | precision | forms | total ms | backbone ms | audio ms | head ms | head/backbone "
          "| params M | peak MB | device |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        for size in args.sizes:
            for precision in precisions:
                for released in ([False, True] if preset in args.released and precision == "fp32" else [False]):
                    command = [sys.executable, __file__, "--device", args.device, "--repeats", str(args.repeats),
                               "--one", preset, str(size), precision, "1" if released else "0"]
                    row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
                    print(f"| {preset} | {size} | {precision} | {'released' if released else 'ours'} "
                          f"| {row['total']:.0f} | {row['backbone']:.0f} | {row['audio']:.0f} | {row['head']:.0f} "
                          f"| {row['head'] / row['backbone']:.2f} | {row['params_m']:.1f} | {row['peak_mb']:.0f} "
                          f"| {row['device']} |", flush=True)


if __name__ == "__main__":
    main()
