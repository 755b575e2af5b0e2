#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU (about 8 minutes once .venv exists; setup adds about 2):
#
#     bash bench/gpu_check.sh [OUT.json]        (default: gpu_check.json)
#
# It sets up ./.venv if needed, adds onnxruntime-gpu (in place of onnxruntime: both provide the same module) and
# TensorRT for torch's CUDA major version, then bench/gpu_check.py runs the CUDA tests, a short bf16 training on
# the synthetic task, and the b5 512 px inference rows (torch CUDA fp32/bf16, ONNX Runtime CUDA fp32 and
# TensorRT fp16), and writes every figure into one JSON. A step that fails is recorded with its error; the
# others still run. `bash scripts/setup.sh` afterwards restores the CPU onnxruntime.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check.json}

[ -x .venv/bin/python ] || bash scripts/setup.sh
CUDA_MAJOR=$(.venv/bin/python -c "import torch; print((torch.version.cuda or '0').split('.')[0])")
if [ "$CUDA_MAJOR" = 0 ]; then
    echo "error: this torch build has no CUDA; install a CUDA build of torch first" >&2
    exit 2
fi
ORT_VERSION=$(.venv/bin/python -c "import onnxruntime; print(onnxruntime.__version__)")
.venv/bin/python -m pip uninstall -q -y onnxruntime || true
.venv/bin/python -m pip install -q --disable-pip-version-check "onnxruntime-gpu==${ORT_VERSION}" \
    || echo "warning: onnxruntime-gpu ${ORT_VERSION} did not install; its rows will fail" >&2
.venv/bin/python -m pip install -q --disable-pip-version-check "tensorrt-cu${CUDA_MAJOR}" \
    || echo "warning: tensorrt-cu${CUDA_MAJOR} did not install; ONNX Runtime falls back to its CUDA provider" >&2
exec .venv/bin/python bench/gpu_check.py --out "$OUT"
