#!/usr/bin/env bash
# Creates ./.venv with the pinned torch + ROS 2 (PyPI wheels) environment and installs this package editable.
# Safe to rerun: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ldconfig -p 2>/dev/null | grep -q 'libportaudio\.so\.2'; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libportaudio2 >/dev/null
    else
        echo "warning: libportaudio2 is missing; install it (sudo apt-get install libportaudio2) for microphone input" >&2
    fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
# A ROS install provides audio_common_msgs and tf2_msgs, a ROS workspace builds the rest with colcon; elsewhere the
# interface packages are built from interfaces/ into the venv.
if ! .venv/bin/python -c "import audio_common_msgs.msg, tf2_msgs.msg, avag_interfaces.action" 2>/dev/null; then
    bash scripts/build_interfaces.sh .venv
fi
