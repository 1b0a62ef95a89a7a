"""Start metaseg_node (or its managed variant, metaseg_lifecycle_node).

    ros2 launch metaseg_ros metaseg.launch.py image:=/camera/image_raw
    ros2 launch metaseg_ros metaseg.launch.py lifecycle:=true autostart:=true

Arguments: image (input topic; the compressed input is <image>/compressed), depth and
camera_info (with the parameter depth.enabled: the registered depth image and the camera's
calibration), params_file,
namespace, use_sim_time, backend (auto | eager | cudagraph | compiled | onnxruntime | tensorrt |
tensorrt_engine | exported; when given it overrides the params file, which says `auto` by default),
fastdds_profile (the shared-memory transport profile that lets large best-effort images
through; exported as FASTDDS_DEFAULT_PROFILES_FILE and, on Humble/Iron/Jazzy, also as
FASTRTPS_DEFAULT_PROFILES_FILE), lifecycle (true: the managed node, which waits for
configure/activate) and autostart (with lifecycle: the node configures and activates itself).

metaseg_ros/ros/launch_command.py spells out the command line this file makes launch_ros
run; the tests start the node with exactly that command line.
"""

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import (
    EnvironmentVariable,
    LaunchConfiguration,
    PathJoinSubstitution,
    PythonExpression,
)
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def _metaseg_node(context: LaunchContext) -> list[Node]:
    """The node; the `backend` argument overrides the params file only when it is given."""
    image = LaunchConfiguration("image")
    overrides = {"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"),
                                                value_type=bool)}
    backend = LaunchConfiguration("backend").perform(context)
    if backend:
        overrides["backend"] = backend
    lifecycle = LaunchConfiguration("lifecycle").perform(context).lower() == "true"
    if lifecycle:
        overrides["autostart"] = ParameterValue(LaunchConfiguration("autostart"),
                                                value_type=bool)
    executable = "metaseg_lifecycle_node" if lifecycle else "metaseg_node"
    return [
        Node(
            package="metaseg_ros",
            executable=executable,
            name="metaseg_node",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), overrides],
            remappings=[
                ("image", image),
                ("image/compressed", [image, "/compressed"]),
                ("depth", LaunchConfiguration("depth")),
                ("camera_info", LaunchConfiguration("camera_info")),
            ],
            output="screen",
            emulate_tty=True,
        ),
    ]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("metaseg_ros")
    profile = LaunchConfiguration("fastdds_profile")
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="sensor_msgs/Image topic to segment"),
        DeclareLaunchArgument("depth", default_value="/camera/depth_registered/image_raw",
                              description="Depth image registered to the camera (16UC1 mm or "
                                          "32FC1 m), used with depth.enabled"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info",
                              description="sensor_msgs/CameraInfo of the camera, used with "
                                          "depth.enabled"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([share, "config", "metaseg.yaml"]),
                              description="Node parameters (YAML)"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of the node and its topics"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock (bag replay, simulation)"),
        DeclareLaunchArgument("backend", default_value="",
                              description="auto | eager | cudagraph | compiled | "
                                          "onnxruntime | tensorrt | tensorrt_engine | "
                                          "exported ('' = as the params file says)"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="true: start metaseg_lifecycle_node (managed)"),
        DeclareLaunchArgument("autostart", default_value="false",
                              description="with lifecycle:=true, configure and activate at "
                                          "start"),
        DeclareLaunchArgument("fastdds_profile",
                              default_value=PathJoinSubstitution(
                                  [share, "config", "fastdds_shm.xml"]),
                              description="Fast DDS XML profile (32 MB shared-memory segment)"),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", profile),
        # Fast DDS 2.x (Humble, Iron, Jazzy) reads the older variable; Kilted warns about it.
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", profile, condition=IfCondition(
            PythonExpression(["'", EnvironmentVariable("ROS_DISTRO", default_value=""),
                              "' in ('humble', 'iron', 'jazzy')"]))),
        OpaqueFunction(function=_metaseg_node),
    ])
