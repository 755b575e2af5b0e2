"""The GPU check, for the lent GPU machine as it is: its own python3, no registry, the few missing wheels carried.

    bash bench/gpu_check.sh --out DIR [--quick] [--dry-run]

Writes DIR/gpu_check.json (every row, with its figures or its error) and DIR/gpu_check.md (a short table), both
rewritten after each row so that what is done survives a later failure. Each row runs in its own process with
its own time limit, inside one budget that keeps the whole command under 8 minutes; a row the budget leaves no
time for is recorded as not run. Rows:
- wheels: the wheels of scripts/gpu_wheels.txt installed from the carried folder (pip --no-index, hashes checked)
  into a scratch folder that the later rows find on PYTHONPATH;
- imports: everything the check runs imported in one process; each third-party module it pulls in must belong
  to a distribution on the machine (bench/gpu_machine_packages.txt) or among the carried wheels;
- environment: GPU, driver, torch and its CUDA, cuDNN, Triton, ONNX Runtime's providers, TensorRT (absent there);
- cuda_tests: the tests that skip without CUDA, in tests/core (the tests that import nothing of ROS);
- training: training/train.py for 300 steps on the synthetic task, bf16, 256 px; the loss must fall (the last
  epoch's mean training loss below the first's). `--quick` leaves it out;
- inference, for avagformer_b5 and then avagformer_b0 at 512 px, torch on CUDA: eager fp32, bf16 and fp16;
  torch.compile (inductor) bf16; and torch.compile bf16 with CUDA graphs (mode "reduce-overhead"). Each gives
  the model's median ms over warm runs (image encoder, audio encoder on the 6 distinct windows of a 4.4 s clip,
  head) and the predictor's end-to-end median ms for a 640x480 frame with that clip, audio cache emptied first;
  compiled rows also give their warm-up (compilation) seconds. Random seed-0 weights: speed, not accuracy.

`--dry-run` runs the same rows on this machine's CPU: the wheels, imports and environment rows for real (the
wheels install for Python 3.12 into a scratch folder, but this Python does not import them), the test selection
collected, train.py's command line parsed, the inference code once on a small b0 on the CPU; every row that needs
CUDA is recorded as skipped.
"""
from __future__ import annotations

import argparse
import ast
import csv
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import types
import zipfile
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
WHEEL_LIST = REPO / "scripts" / "gpu_wheels.txt"
MACHINE_PACKAGES = REPO / "bench" / "gpu_machine_packages.txt"
DEFAULT_WHEELS = REPO / ".gpu-wheels"
# The machine's Python; the install takes wheels for it whatever runs this, so a dry run checks the same files.
TARGET_PYTHON = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
                 "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                 "--platform", "manylinux2014_x86_64"]
BUDGET_S = 450  # the whole command within 8 minutes, start-up and writing included
TRAIN_STEPS = 300
TRAIN_SCRIPTS = ["training/make_synthetic.py", "training/prepare_dataset.py", "training/train.py"]
ROS_FREE_TESTS = REPO / "tests" / "core"
PRESETS = ["avagformer_b5", "avagformer_b0"]
IMAGE_SIZE = 512
FRAME_SHAPE = (480, 640, 3)
CLIP_SECONDS = 4.4
# (row, precision, torch.compile mode or None); one process per group, so a crash loses one group's rows only.
INFERENCE_GROUPS = {
    "eager": [("eager fp32", "fp32", None), ("eager bf16", "bf16", None), ("eager fp16", "fp16", None)],
    "compiled": [("compile bf16", "bf16", "default"), ("compile bf16 + CUDA graphs", "bf16", "reduce-overhead")],
}
GROUP_LIMIT_S = {("avagformer_b5", "eager"): 90, ("avagformer_b5", "compiled"): 200,
                 ("avagformer_b0", "eager"): 60, ("avagformer_b0", "compiled"): 150}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def carried_wheels() -> list[dict]:
    """scripts/gpu_wheels.txt as rows: name, version, sha256, file, size (bytes)."""
    wheels, pending = [], None
    for line in WHEEL_LIST.read_text().splitlines():
        if line.startswith("# wheel:"):
            file, size = line.removeprefix("# wheel:").split()
            pending = {"file": file, "size": int(size)}
        elif line and not line.startswith("#"):
            match = re.fullmatch(r"(\S+)==(\S+) --hash=sha256:([0-9a-f]{64})", line)
            if match is None or pending is None:
                raise ValueError(f"{WHEEL_LIST}: expected '# wheel: FILE SIZE' and then 'NAME==VERSION "
                                 f"--hash=sha256:DIGEST', got {line!r}")
            name, version, digest = match.groups()
            wheels.append({"name": name, "version": version, "sha256": digest, **pending})
            pending = None
    return wheels


def wheel_install_command(wheels: Path, target: Path) -> list[str]:
    """The one pip call of the check: from the carried folder only, never a registry."""
    return [PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "--no-index",
            "--find-links", str(wheels), "--no-deps", "--no-compile", "--no-cache-dir", "--only-binary=:all:",
            *TARGET_PYTHON, "--target", str(target), "--requirement", str(WHEEL_LIST)]


def ros_free_cuda_tests() -> list[str]:
    """The tests that need CUDA (they skip without it) in tests/core, the folder of the tests that import nothing
    of ROS (tests/test_imports.py holds it and tests/conftest.py to that)."""
    tests = []
    for path in sorted(ROS_FREE_TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        tests += [f"{path.relative_to(REPO)}::{node.name}" for node in tree.body
                  if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
                  and any("not torch.cuda.is_available()" in ast.unparse(d) for d in node.decorator_list)]
    return tests


def train_command(index: Path, out: Path, steps: int) -> list[str]:
    return [PYTHON, "training/train.py", "--config", "training/configs/synthetic_b0.yaml", "--data", str(index),
            "--out-dir", str(out), "--image-size", "256", "--precision", "bf16", "--device", "cuda",
            "--max-steps", str(steps), "--num-workers", "6", "--bn-recalibration-batches", "5"]


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def limit(self, wanted: float) -> float:
        """Seconds a row may take: what it asks for, within what is left (0: no time left for it)."""
        left = self.deadline - time.monotonic()
        return min(wanted, left) if left >= 15 else 0


def run(command: list[str], timeout_s: float, env: dict) -> dict:
    """Run a command from the checkout; its outcome, with the output a timeout leaves too."""
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=REPO, env=env)
        outcome = {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
    except subprocess.TimeoutExpired as expired:
        as_text = (lambda b: b.decode(errors="replace") if isinstance(b, bytes) else b or "")
        outcome = {"returncode": None, "stdout": as_text(expired.stdout),
                   "stderr": as_text(expired.stderr) + f"\nstopped at its limit of {timeout_s:.0f} s"}
    outcome["seconds"] = round(time.monotonic() - started, 1)
    return outcome


def failed(outcome: dict, what: str) -> dict:
    reason = "timeout" if outcome["returncode"] is None else f"exit status {outcome['returncode']}"
    return {"status": "failed", "error": f"{what}: {reason}", "stderr_tail": outcome["stderr"][-1500:]}


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


# rows ----------------------------------------------------------------------------------------------------------

def wheels_row(args, env: dict) -> dict:
    expected = carried_wheels()
    if not args.wheels.is_dir():
        return {"status": "failed", "error": f"wheel folder {args.wheels} is missing: run bash "
                f"scripts/fetch_gpu_wheels.sh here first and carry that folder to the GPU machine"}
    present = sorted(p.name for p in args.wheels.iterdir())
    if present != sorted(w["file"] for w in expected):
        return {"status": "failed", "error": f"{args.wheels} holds {present}, scripts/gpu_wheels.txt lists "
                f"{sorted(w['file'] for w in expected)}: fetch them again with bash scripts/fetch_gpu_wheels.sh"}
    done = run(wheel_install_command(args.wheels, args.site), 120, {**env, "PIP_CONFIG_FILE": os.devnull})
    if done["returncode"] != 0:
        return failed(done, "installing the carried wheels (pip --no-index)")
    unmet = unmet_requirements(args.wheels)
    if unmet:
        return {"status": "failed", "error": f"the carried wheels need what is neither on the machine nor carried: "
                f"{unmet}; add those to scripts/gpu_wheels.txt"}
    return {"status": "ok", "installed": [f"{w['name']}=={w['version']}" for w in expected],
            "bytes": sum(w["size"] for w in expected), "into": str(args.site), "seconds": done["seconds"],
            "pip_log": (done["stdout"] + done["stderr"])[-1500:]}  # "Looking in indexes" here would be a bug


def module_level_imports(path: Path) -> set[str]:
    """Top-level names a file imports when it loads (not inside its functions or classes)."""
    names, pending = set(), list(ast.parse(path.read_text()).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            pending.extend(ast.iter_child_nodes(node))
    return names


def imports_probe() -> None:
    """In a child: import what the check runs; then, for each third-party module that those of our files import
    at module level, its distributions. What third-party packages import in turn is theirs: the machine's copies
    bring their own."""
    sys.path[:0] = [str(REPO / "tests"), str(ROS_FREE_TESTS), str(REPO / "training"), str(REPO / "bench")]
    for module in ["avag_core.inference.predictor", "avag_core.data", "avag_core.training.evaluation",
                   "avag_core.training.losses", "avag_core.training.optim", "avag_core.training.progress",
                   "avag_core.checkpoints.weights", "train", "make_synthetic",
                   "prepare_dataset", "timing", "conftest",
                   *sorted({Path(test.split("::")[0]).stem for test in ros_free_cuda_tests()})]:
        importlib.import_module(module)
    # the checkout's own sources: a venv made inside it (./.venv, as setup.sh makes) holds third-party modules
    ours = {Path(m.__file__) for m in list(sys.modules.values())
            if getattr(m, "__file__", None) and Path(m.__file__).suffix == ".py"
            and Path(m.__file__).is_relative_to(REPO) and not Path(m.__file__).is_relative_to(REPO / ".venv")}
    local = {path.relative_to(REPO).parts[0].removesuffix(".py") for path in ours} | {path.stem for path in ours}
    wanted = set().union(*map(module_level_imports, ours)) - sys.stdlib_module_names - local - {"__future__"}
    owners = metadata.packages_distributions()
    modules = {name: sorted({normalise(d) for d in owners.get(name, [])}) for name in sorted(wanted)}
    print(json.dumps({"files": len(ours), "modules": modules, "unowned": [n for n, d in modules.items() if not d]}))


def unmet_requirements(wheels: Path) -> list[str]:
    """Each carried wheel's requirements (extras aside) that neither the machine nor the carried wheels meet."""
    there = machine_packages() | {normalise(w["name"]) for w in carried_wheels()}
    unmet = []
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            text = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        for requirement in re.findall(r"^Requires-Dist: (.+)$", text, re.M):
            name = normalise(re.match(r"[A-Za-z0-9._-]+", requirement).group())
            if "extra ==" not in requirement and name not in there:
                unmet.append(f"{wheel.name}: {requirement}")
    return unmet


def imports_row(args, env: dict) -> dict:
    done = run([PYTHON, __file__, "--probe-imports"], 180, env)
    if done["returncode"] != 0:
        return failed(done, "importing what the check runs")
    probe = last_json(done["stdout"])
    there = machine_packages() | {normalise(w["name"]) for w in carried_wheels()}
    missing = {module: dists for module, dists in probe["modules"].items() if not set(dists) & there}
    result = {"status": "ok" if not missing and not probe["unowned"] else "failed",
              "third_party_modules": sorted(probe["modules"]), "our_files": probe["files"],
              "seconds": done["seconds"]}
    if missing:
        result["error"] = (f"imported but neither on the GPU machine nor carried: {missing}; add the wheels to "
                           "scripts/gpu_wheels.txt or make the import lazy")
    if probe["unowned"]:
        result["error"] = result.get("error", "") + f" modules of no known distribution: {probe['unowned']}"
    return result


def machine_packages() -> set[str]:
    return {normalise(name) for line in MACHINE_PACKAGES.read_text().splitlines() if not line.startswith("#")
            for name in line.split()}


ENVIRONMENT_PROBE = """
import importlib.metadata, importlib.util, json, torch
def version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
info = {"python": __import__("sys").version.split()[0], "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "triton": version("triton"), "timm": version("timm"),
        "cuda_available": torch.cuda.is_available(),
        "tensorrt": version("tensorrt") or "absent: not installed there; no TensorRT rows"}
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                gpu_memory_gib=round(props.total_memory / 2**30, 1))
if importlib.util.find_spec("onnxruntime"):
    import onnxruntime
    info["onnxruntime"] = f"{onnxruntime.__version__} {onnxruntime.get_available_providers()}"
print(json.dumps(info))
"""


def environment_row(args, env: dict) -> dict:
    done = run([PYTHON, "-c", ENVIRONMENT_PROBE], 90, env)
    if done["returncode"] != 0:
        return failed(done, "the environment probe")
    info = last_json(done["stdout"])
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as error:
        info["nvidia_smi"] = f"not available: {error}"
    return {"status": "ok", **info}


def cuda_tests_row(args, env: dict) -> dict:
    tests = ros_free_cuda_tests()
    if not tests:
        return {"status": "failed", "error": "no test file free of ROS has a test that skips without CUDA"}
    selection = ["-p", "no:cacheprovider", *tests]
    if args.dry_run:
        done = run([PYTHON, "-m", "pytest", "--collect-only", "-q", *selection], 120, env)
        collected = [line for line in done["stdout"].splitlines() if "::" in line]
        if done["returncode"] != 0 or not collected:
            return failed(done, "collecting the CUDA tests")
        return {"status": "skipped", "reason": "--dry-run: no CUDA; the selection was collected",
                "tests": collected}
    done = run([PYTHON, "-m", "pytest", "-q", "-rs", *selection], args.budget.limit(150), env)
    counts = {kind: int(count) for count, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", done["stdout"])}
    ok = done["returncode"] == 0 and counts.get("passed", 0) > 0 and not counts.get("skipped")
    return {"status": "ok" if ok else "failed", "tests": tests, **counts, "seconds": done["seconds"],
            "tail": done["stdout"][-1500:]}


def training_row(args, env: dict) -> dict:
    if args.quick:
        return {"status": "skipped", "reason": "--quick"}
    if args.dry_run:
        train = load_module("training/train.py")
        cfg = train.parse_config(train_command(Path("INDEX"), Path("OUT"), TRAIN_STEPS)[2:])
        return {"status": "skipped", "reason": "--dry-run: no CUDA; the train.py command line was parsed",
                "config": {k: cfg[k] for k in ("model", "image_size", "precision", "device", "max_steps",
                                               "batch_size")}}
    with tempfile.TemporaryDirectory(prefix="avag-gpu-train-") as scratch:
        data, index, out = (Path(scratch) / name for name in ("data", "index", "run"))
        steps = [(["training/make_synthetic.py", "--out", str(data), "--num", "400", "--seed", "0", "--size",
                   "256"], 90),
                 (["training/prepare_dataset.py", "--root", str(data), "--out", str(index), "--pairs-per-image",
                   "1", "--workers", "8"], 90),
                 (train_command(index, out, TRAIN_STEPS)[1:], 240)]
        seconds = {}
        for command, wanted in steps:
            limit = args.budget.limit(wanted)
            if not limit:
                return {"status": "not run", "reason": "the 8-minute budget ran out", "seconds": seconds}
            done = run([PYTHON, *command], limit, env)
            seconds[Path(command[0]).stem] = done["seconds"]
            if done["returncode"] != 0:
                return {**failed(done, command[0]), "seconds": seconds}
        rows = list(csv.DictReader((out / "metrics.csv").open()))
    losses = [round(float(row["train_loss"]), 4) for row in rows]
    fell = len(losses) >= 2 and losses[-1] < losses[0]
    return {"status": "ok" if fell else "failed", "loss_fell": fell, "steps": int(rows[-1]["step"]),
            "train_loss_by_epoch": losses, "val_mIoU_f_by_epoch": [round(float(r["mIoU_f"]), 2) for r in rows],
            "seconds": seconds, **({} if fell else {"error": "the training loss did not fall"})}


def load_module(relative: str):
    spec = importlib.util.spec_from_file_location(Path(relative).stem, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inference_rows(args, env: dict, preset: str, group: str) -> list[dict]:
    planned = [{"row": f"{preset} {IMAGE_SIZE} px {name}", "preset": preset, "size": IMAGE_SIZE,
                "precision": precision, "compile": mode, "cuda_graphs": mode == "reduce-overhead"}
               for name, precision, mode in INFERENCE_GROUPS[group]]
    if args.dry_run:
        # The measuring code itself, once, on what this CPU affords: a b0 at 64 px in fp32, eager.
        probe = {}
        if group == "eager" and preset == PRESETS[-1]:
            done = run([PYTHON, __file__, "--measure", preset, group, "--device", "cpu", "--size", "64",
                        "--repeats", "1"], 180, env)
            if done["returncode"] != 0:
                return [{**row, **failed(done, "the inference code on the CPU")} for row in planned]
            probe = {"cpu_probe_b0_64px_fp32": last_json(done["stdout"]), "seconds": done["seconds"]}
        return [{**row, "status": "skipped", "reason": "--dry-run: no CUDA", **probe} for row in planned]
    limit = args.budget.limit(GROUP_LIMIT_S[preset, group])
    if not limit:
        return [{**row, "status": "not run", "reason": "the 8-minute budget ran out"} for row in planned]
    done = run([PYTHON, __file__, "--measure", preset, group], limit, env)
    measured = {}
    for line in done["stdout"].splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            measured[result.pop("row")] = result
    error = failed(done, "the measuring process") if done["returncode"] != 0 else {}
    planned = [{**row, "group_seconds": done["seconds"]} for row in planned]
    return [{**row, **measured.get(row["row"].removeprefix(f"{preset} {IMAGE_SIZE} px "), error or
                                   {"status": "failed", "error": "no figures came back"})} for row in planned]


def measure(preset: str, group: str, device: str, size: int, repeats: int) -> None:
    """In a child: print one JSON line per row of a group as soon as it is measured."""
    import numpy as np
    import torch

    sys.path.insert(0, str(REPO / "bench"))
    from avag_core import AffordancePredictor, build_model
    from avag_core.inference.backends import TorchBackend
    from avag_core.inference.predictor import AudioEmbeddingCache
    from timing import median_ms

    torch.manual_seed(0)
    model = build_model(preset, image_size=size).eval()
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, FRAME_SHAPE, dtype=np.uint8)
    clip = (rng.standard_normal(int(CLIP_SECONDS * 16000)) * 0.1).astype(np.float32)
    rows = INFERENCE_GROUPS[group] if device == "cuda" else [("eager fp32", "fp32", None)]
    for name, precision, mode in rows:
        started = time.monotonic()
        try:
            backend = TorchBackend(model, device, precision)
            if mode:
                torch._dynamo.reset()
                compiled = {part: torch.compile(getattr(model, part), mode=mode)
                            for part in ("encode_image", "audio_encoder", "decode")}
                backend.model = types.SimpleNamespace(**compiled)  # the parts TorchBackend calls, compiled
            predictor = AffordancePredictor(backend)
            step_begin = torch.compiler.cudagraph_mark_step_begin if mode == "reduce-overhead" else (lambda: None)
            with torch.inference_mode():
                pixels = predictor.prepare_image(frame)
                windows = torch.unique(predictor.prepare_audio(clip, 16000), dim=0)

                def model_step() -> None:
                    step_begin()
                    backend.decode(backend.encode_image(pixels), backend.embed_audio(windows)[None])

                def predict_cold() -> None:
                    step_begin()
                    predictor.audio_cache = AudioEmbeddingCache()
                    predictor.predict(frame, clip, 16000)

                for _ in range(3 if mode else 1):  # compilation, then CUDA graph recording
                    model_step()
                    predict_cold()
                warmup_s = round(time.monotonic() - started, 1)
                result = {"model_ms": round(median_ms(model_step, repeats, backend.device), 2),
                          "predict_640x480_ms": round(median_ms(predict_cold, repeats, backend.device), 2)}
            print(json.dumps({"row": name, "status": "ok", **result, "warmup_s": warmup_s,
                              "repeats": repeats, "runs_on": backend.description}), flush=True)
        except Exception as error:  # one row's failure (a compile error, say) must not lose the group's others
            print(json.dumps({"row": name, "status": "failed", "error": f"{type(error).__name__}: {error}"[-1500:]}),
                  flush=True)


# report --------------------------------------------------------------------------------------------------------

def figures(row: dict) -> str:
    if "model_ms" in row:
        text = f"model {row['model_ms']:.1f} ms, predict 640x480 {row['predict_640x480_ms']:.1f} ms"
        return text + (f", warm-up {row['warmup_s']:.0f} s" if row.get("compile") else "")
    if "installed" in row:
        return f"{', '.join(row['installed'])} ({row['bytes'] / 2**20:.1f} MiB)"
    if "third_party_modules" in row and row["status"] == "ok":
        return (f"{', '.join(row['third_party_modules'])}: what our {row['our_files']} files import, on the machine "
                "or carried")
    if row["row"] == "environment":
        return ", ".join(f"{k} {row.get(k)}" for k in ("gpu", "nvidia_smi", "torch", "torch_cuda", "triton",
                                                        "tensorrt") if row.get(k))
    if row["row"] == "training" and "train_loss_by_epoch" in row:
        return f"{row['steps']} steps, loss by epoch {row['train_loss_by_epoch']}"
    if row["row"] == "cuda_tests" and row["status"] == "skipped":
        return f"{len(row['tests'])} collected: {', '.join(sorted({t.split('[')[0] for t in row['tests']}))}"
    if row["row"] == "cuda_tests" and "tests" in row:
        return ", ".join(f"{row[k]} {k}" for k in ("passed", "failed", "skipped", "error", "errors") if k in row)
    return row.get("error") or row.get("reason") or ""


def write_report(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("gpu_check.json", json.dumps(report, indent=2) + "\n"), ("gpu_check.md", table(report))):
        partial = out / f".{name}.partial"
        partial.write_text(text)
        partial.replace(out / name)


def table(report: dict) -> str:
    lines = [f"GPU check ({report['mode']}), {report['date']}", "", "| row | status | figures | s |",
             "|---|---|---|---|"]
    for row in report["rows"]:
        cells = [row["row"], row["status"], figures(row).replace("|", "/"), str(row.get("seconds", ""))]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check"),
                        help="folder for gpu_check.json and gpu_check.md (default: $OUT, else ./gpu_check)")
    parser.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS, help="the carried wheel folder")
    parser.add_argument("--quick", action="store_true", help="leave the training row out (a second call)")
    parser.add_argument("--dry-run", action="store_true", help="on a CPU: every CUDA row skipped, the rest real")
    parser.add_argument("--probe-imports", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, metavar=("PRESET", "GROUP"), help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=IMAGE_SIZE, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=20, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_imports:
        imports_probe()
        return 0
    if args.measure:
        measure(*args.measure, args.device, args.size, args.repeats)
        return 0
    args.budget = Budget(BUDGET_S)
    args.out = args.out.resolve()
    args.wheels = args.wheels.resolve()
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "mode": "dry run" if args.dry_run else "quick" if args.quick else "full", "rows": []}
    with tempfile.TemporaryDirectory(prefix="avag-gpu-site-") as site:
        args.site = Path(site)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # The carried packages come after the checkout and before the machine's own: the dry run's Python is not
        # the 3.12 they are built for, so there they are installed and checked but not imported.
        paths = [str(REPO)] + ([] if args.dry_run else [site]) + [p for p in [env.get("PYTHONPATH")] if p]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        steps = [("wheels", wheels_row), ("imports", imports_row), ("environment", environment_row),
                 ("cuda_tests", cuda_tests_row), ("training", training_row)]
        for name, step in steps:
            print(f"{name} ...", flush=True)
            started = time.monotonic()
            try:
                row = {"row": name, **step(args, env)}
            except Exception as error:  # a broken row is recorded; the next rows still run
                row = {"row": name, "status": "failed", "error": f"{type(error).__name__}: {error}"}
            row.setdefault("seconds", round(time.monotonic() - started, 1))
            report["rows"].append(row)
            write_report(args.out, report)
        for group in INFERENCE_GROUPS:
            for preset in PRESETS:
                print(f"{preset} {group} ...", flush=True)
                report["rows"].extend(inference_rows(args, env, preset, group))
                write_report(args.out, report)
    print(table(report), end="")
    bad = [row["row"] for row in report["rows"] if row["status"] not in ("ok", "skipped")]
    print(f"wrote {args.out / 'gpu_check.json'} and gpu_check.md: "
          f"{'every row ok or skipped' if not bad else 'NOT OK: ' + ', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
