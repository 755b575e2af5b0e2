#!/usr/bin/env bash
# Creates a venv with the pinned torch + ROS 2 environment from PyPI wheels and installs this package editable:
#     [ROS_DISTRO=jazzy|kilted] [VENV=.venv] bash scripts/setup.sh
# ROS_DISTRO picks the distribution's wheels (requirements/<distro>.txt); unset, it is the venv's own, or jazzy for
# a new venv. Safe to rerun: it only installs what is missing. A venv holds one distribution, so asking an existing
# venv for another is refused, before anything changes, with the command that sets that one up.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ros_distro.sh
venv=${VENV:-.venv}

held=$(venv_ros_distro "$venv")
distro=${ROS_DISTRO:-${held:-$DEFAULT_ROS_DISTRO}}
check_ros_distro "$distro"
if [ -n "$held" ] && [ "$held" != "$distro" ]; then
    echo "error: $venv holds ROS 2 $held, and a venv holds one distribution. For $distro, make it anew:" >&2
    echo "    rm -rf $venv && ROS_DISTRO=$distro VENV=$venv bash scripts/setup.sh" >&2
    echo "or give it a venv of its own: ROS_DISTRO=$distro VENV=.venv-$distro bash scripts/setup.sh" >&2
    exit 1
fi

if ! ldconfig -p 2>/dev/null | grep -q 'libportaudio\.so\.2'; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libportaudio2 >/dev/null
    else
        echo "warning: libportaudio2 is missing; install it (sudo apt-get install libportaudio2) for microphone input" >&2
    fi
fi

PYTHON=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
echo "$distro" > "$venv/ros-distro.tmp" && mv "$venv/ros-distro.tmp" "$venv/ros-distro"
echo "$venv: ROS 2 $distro"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r requirements/python.txt -r "requirements/$distro.txt"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
# A ROS install provides audio_common_msgs and tf2_msgs, a ROS workspace builds the rest with colcon; elsewhere the
# interface packages are built from interfaces/ into the venv.
if ! "$venv/bin/python" -c "import audio_common_msgs.msg, tf2_msgs.msg, avag_interfaces.action" 2>/dev/null; then
    bash scripts/build_interfaces.sh "$venv"
fi
