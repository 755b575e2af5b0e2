#!/usr/bin/env bash
# Fetch, here, the few wheels that the GPU check needs and the GPU machine lacks (scripts/gpu_wheels.txt), for
# that machine's Python (CPython 3.12, manylinux x86-64), into a folder that travels with the check:
#
#     bash scripts/fetch_gpu_wheels.sh [FOLDER]        (default: .gpu-wheels, git-ignored)
#
# The machine reaches no registry, so this runs where pip reaches PyPI; the hashes pin every file.
set -euo pipefail
cd "$(dirname "$0")/.."
FOLDER=${1:-.gpu-wheels}
PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --require-hashes \
    --python-version 3.12 --implementation cp --abi cp312 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --dest "$FOLDER" --requirement scripts/gpu_wheels.txt
du -sh "$FOLDER"
