#!/usr/bin/env bash
# The GPU check, on the lent GPU machine as it is (its own python3, no registry reachable), about 8 minutes:
#
#     bash bench/gpu_check.sh --out "$OUT" [--quick] [--dry-run]
#
# Beforehand, here: bash scripts/fetch_gpu_wheels.sh, and carry .gpu-wheels with the command. bench/gpu_check.py
# says what each row measures; --quick leaves training out, --dry-run runs on a CPU with the CUDA rows skipped.
# PYTHON picks another interpreter (the tests pass this machine's venv).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" bench/gpu_check.py "$@"
