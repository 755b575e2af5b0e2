"""The GPU check that bench/gpu_check.sh runs (after installing onnxruntime-gpu and TensorRT): one JSON of figures.

    python bench/gpu_check.py --out gpu_check.json [--train-steps 300]

Steps, each in its own process with a time limit, each recorded with its outcome even when it fails:
1. environment: GPU, driver, torch/CUDA, onnxruntime providers, TensorRT;
2. the CUDA tests (`pytest -k cuda`): passed, failed, skipped;
3. training: train.py on 400 synthetic samples at 256 px, bf16 on CUDA, `--train-steps` steps; the loss must
   fall (the mean of the last epoch's losses below the first epoch's);
4. inference: bench/inference.py for avagformer_b5 at 512 px, rows torch:cuda:fp32, torch:cuda:bf16,
   onnxruntime:cuda:fp32 (the CUDA provider) and onnxruntime:cuda:fp16 (TensorRT, whose engines build on the
   first run: minutes).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def run(command: list[str], timeout_s: float, env: dict | None = None) -> dict:
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=REPO, env=env)
        outcome = {"returncode": done.returncode, "stdout_tail": done.stdout[-3000:],
                   "stderr_tail": done.stderr[-3000:]}
    except subprocess.TimeoutExpired:
        outcome = {"returncode": "timeout", "stdout_tail": "", "stderr_tail": f"over {timeout_s:.0f} s"}
    outcome["seconds"] = round(time.monotonic() - started, 1)
    return outcome


def environment() -> dict:
    probe = """
import json, torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0),
        "capability": list(torch.cuda.get_device_capability(0))}
try:
    import onnxruntime
    info["onnxruntime"] = onnxruntime.__version__
    info["onnxruntime_providers"] = onnxruntime.get_available_providers()
except ImportError as error:
    info["onnxruntime"] = f"not importable: {error}"
try:
    import tensorrt
    info["tensorrt"] = tensorrt.__version__
except ImportError:
    info["tensorrt"] = None
print(json.dumps(info))
"""
    done = run([PYTHON, "-c", probe], 120)
    info = json.loads(done["stdout_tail"].splitlines()[-1]) if done["returncode"] == 0 else done
    smi = run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], 30)
    info["nvidia_smi"] = smi["stdout_tail"].strip()
    return info


def cuda_tests() -> dict:
    done = run([PYTHON, "-m", "pytest", "-q", "-k", "cuda", "tests"], 600)
    summary = re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", done["stdout_tail"])
    return {**{kind: int(count) for count, kind in summary}, "returncode": done["returncode"],
            "seconds": done["seconds"], "tail": done["stdout_tail"][-1500:]}


def training(steps: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="avag-gpu-train-") as scratch:
        data, index, out = Path(scratch) / "data", Path(scratch) / "index", Path(scratch) / "run"
        prepared = [run([PYTHON, "training/make_synthetic.py", "--out", str(data), "--num", "400", "--seed", "0",
                         "--size", "256"], 300),
                    run([PYTHON, "training/prepare_dataset.py", "--root", str(data), "--out", str(index)], 300)]
        if any(step["returncode"] != 0 for step in prepared):
            return {"error": "could not prepare the synthetic data", "steps": prepared}
        done = run([PYTHON, "training/train.py", "--config", "training/configs/synthetic_b0.yaml", "--data",
                    str(index), "--out-dir", str(out), "--image-size", "256", "--precision", "bf16", "--device",
                    "cuda", "--max-steps", str(steps), "--num-workers", "4", "--bn-recalibration-batches", "5"], 900)
        rows = list(csv.DictReader(open(out / "metrics.csv"))) if (out / "metrics.csv").is_file() else []
    losses = [float(r["train_loss"]) for r in rows]
    result = {"returncode": done["returncode"], "seconds": done["seconds"], "epochs": len(rows),
              "train_loss_by_epoch": losses, "val_mIoU_f_by_epoch": [float(r["mIoU_f"]) for r in rows]}
    result["loss_fell"] = len(losses) >= 2 and losses[-1] < losses[0]
    if done["returncode"] != 0:
        result["stderr_tail"] = done["stderr_tail"]
    return result


def inference() -> dict:
    env = dict(os.environ)
    try:  # the TensorRT wheel keeps its libraries in its own folder, which ONNX Runtime must find
        import tensorrt_libs
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(Path(tensorrt_libs.__file__).parent),
                                                               env.get("LD_LIBRARY_PATH")]))
    except ImportError:
        pass
    with tempfile.NamedTemporaryFile(suffix=".json") as rows:
        done = run([PYTHON, "bench/inference.py", "--presets", "avagformer_b5", "--sizes", "512", "--rows",
                    "torch:cuda:fp32", "torch:cuda:bf16", "onnxruntime:cuda:fp32", "onnxruntime:cuda:fp16",
                    "--repeats", "20", "--json", rows.name], 1500, env)
        table = json.loads(Path(rows.name).read_text() or "[]") if done["returncode"] == 0 else []
    return {"rows": table, "table": done["stdout_tail"], "returncode": done["returncode"],
            "seconds": done["seconds"], "stderr_tail": done["stderr_tail"][-1500:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--train-steps", type=int, default=300)
    args = parser.parse_args()
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "environment": environment()}
    for name, step in (("cuda_tests", cuda_tests), ("training", lambda: training(args.train_steps)),
                       ("inference", inference)):
        print(f"{name} ...", flush=True)
        report[name] = step()
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # what is done so far survives a later failure
    print(json.dumps({k: report[k] for k in ("environment",)}, indent=2))
    print(report["inference"]["table"])
    ok = report["cuda_tests"].get("failed", 0) == 0 and report["training"].get("loss_fell", False) \
        and report["inference"]["returncode"] == 0
    print(f"wrote {args.out}: {'all steps passed' if ok else 'SOME STEPS FAILED (see the JSON)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
