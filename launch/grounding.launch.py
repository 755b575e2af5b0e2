"""Start the affordance grounding node.

    ros2 launch avag_ros grounding.launch.py checkpoint:=/path/model.pt image_topic:=/camera/image_raw
    ros2 launch avag_ros grounding.launch.py checkpoint:=/path/model.pt image_topic:=/camera/camera/color/image_raw \
        depth_enabled:=true audio_device:=USB audio_sample_rate:=48000 reuse_max_change:=0
    ros2 launch avag_ros grounding.launch.py --show-args

Every argument but params_file, image_topic, depth_topic, camera_info_topic, namespace and log_level sets the node
parameter of (about) the same name; left empty, it sets nothing and the parameter file's value stands.
"""
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode

from avag_ros.parameters import LAUNCH_ARGUMENTS, node_logger_name, parse_text, spec

LAUNCH_ONLY = {
    "params_file": ("Parameter file of the node",
                    PathJoinSubstitution([get_package_share_directory("avag_ros"), "config", "grounding.yaml"])),
    "image_topic": ("Camera image topic (sensor_msgs/Image); image/compressed follows it", "/camera/image_raw"),
    # realsense2_camera 4.x's names (its rs_launch.py with align_depth.enable:=true)
    "depth_topic": ("Aligned depth image topic, read with depth_enabled:=true",
                    "/camera/camera/aligned_depth_to_color/image_raw"),
    "camera_info_topic": ("CameraInfo of the aligned depth image",
                          "/camera/camera/aligned_depth_to_color/camera_info"),
    "namespace": ("Namespace of the node and its topics", ""),
    "log_level": ("Log level of the node's own logger (not rcl's or the middleware's): debug, info, warn, error "
                  "or fatal", "info"),
}


def _node(context) -> list[LifecycleNode]:
    overrides = {}
    for argument, parameter in LAUNCH_ARGUMENTS.items():
        text = LaunchConfiguration(argument).perform(context)
        if text:
            overrides[parameter] = parse_text(parameter, text)
    image_topic = LaunchConfiguration("image_topic")
    # Scoped to the node's logger: a bare `--log-level debug` turns on rcl's and the middleware's too.
    log_level = f"{node_logger_name(LaunchConfiguration('namespace').perform(context))}:=" \
                f"{LaunchConfiguration('log_level').perform(context)}"
    # A LifecycleNode, so that launch files can drive its transitions (and `ros2 launch` knows it is managed);
    # the node's own `autostart` parameter still configures and activates it by default.
    return [LifecycleNode(
        package="avag_ros",
        executable="grounding_node",
        name="affordance_grounding",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[LaunchConfiguration("params_file"), overrides],
        ros_arguments=["--log-level", log_level],
        remappings=[("image", image_topic), ("image/compressed", [image_topic, "/compressed"]),
                    ("depth/image", LaunchConfiguration("depth_topic")),
                    ("depth/camera_info", LaunchConfiguration("camera_info_topic"))],
    )]


def generate_launch_description() -> LaunchDescription:
    declared = [DeclareLaunchArgument(name, default_value=default, description=description)
                for name, (description, default) in LAUNCH_ONLY.items()]
    declared += [DeclareLaunchArgument(argument, default_value="", description=(
                     f"Sets parameter '{parameter}': {spec(parameter).description} Empty: the params file's value."))
                 for argument, parameter in LAUNCH_ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_node)])
