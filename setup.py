"""ament_python package: `colcon build` on a ROS 2 install, or `pip install -e .` into a plain venv."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "avag_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["avag_core", "avag_core.*", "avag_ros", "avag_ros.*"]),
    package_data={PACKAGE: ["data/*.pt", "data/*.md"]},  # the demo's weights and how they were trained
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    python_requires=">=3.10",
    install_requires=["setuptools"],
    zip_safe=False,  # the demo reads its weights file by path
    maintainer="avag_ros maintainers",
    maintainer_email="maintainers@avag-ros.invalid",
    description="Audio-visual affordance grounding (AVAGFormer) for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "avag_predict = avag_core.predict:main",
            "grounding_node = avag_ros.grounding_node:main",
            "sample_player = avag_ros.sample_player:main",
        ],
    },
)
