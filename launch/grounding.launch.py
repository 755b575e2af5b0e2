"""Start the affordance grounding node.

    ros2 launch avag_ros grounding.launch.py checkpoint:=/path/model.pt image_topic:=/camera/image_raw
"""
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

ARGUMENTS = {
    "params_file": ("Parameter file of the node",
                    PathJoinSubstitution([get_package_share_directory("avag_ros"), "config", "grounding.yaml"])),
    "checkpoint": ("Trained AVAGFormer checkpoint; empty runs random weights", ""),
    "image_topic": ("Camera image topic (sensor_msgs/Image)", "/camera/image_raw"),
    "audio_source": ("microphone, file or topic", "microphone"),
    "namespace": ("Namespace of the node and its topics", ""),
    "use_sim_time": ("Use /clock", "false"),
}


def generate_launch_description() -> LaunchDescription:
    config = {name: LaunchConfiguration(name) for name in ARGUMENTS}
    node = Node(
        package="avag_ros",
        executable="grounding_node",
        name="affordance_grounding",
        namespace=config["namespace"],
        output="screen",
        parameters=[config["params_file"], {
            "checkpoint": ParameterValue(config["checkpoint"], value_type=str),
            "audio.source": ParameterValue(config["audio_source"], value_type=str),
            "use_sim_time": ParameterValue(config["use_sim_time"], value_type=bool),
        }],
        remappings=[("image", config["image_topic"]),
                    ("image/compressed", [config["image_topic"], "/compressed"])],
    )
    declared = [DeclareLaunchArgument(name, default_value=default, description=description)
                for name, (description, default) in ARGUMENTS.items()]
    return LaunchDescription([*declared, node])
