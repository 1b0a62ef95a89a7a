"""The command line and environment that launch/metaseg.launch.py makes launch_ros run.

launch and launch_ros cannot be installed everywhere (not from PyPI), so tests start the
node with the command line spelled out here; test_launch_file.py checks that the launch
file's arguments, defaults, parameters, remappings and environment match this module.

launch_ros turns `Node(name=..., namespace=..., parameters=[file, {dict}],
remappings=[...])` into:

    <executable> --ros-args -r __node:=<name> -r __ns:=<namespace>
                 --params-file <file> --params-file <yaml written from dict>
                 -r <from>:=<to> ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

NODE_NAME = "metaseg_node"
EXECUTABLE = "metaseg_node"
LIFECYCLE_EXECUTABLE = "metaseg_lifecycle_node"
PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
# Fast DDS 2.x (up to Jazzy) reads the older name; Kilted's Fast DDS 3 warns that it is
# deprecated, so it is only set for these distributions.
LEGACY_PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"
LEGACY_DISTROS = ("humble", "iron", "jazzy")


def package_share() -> Path:
    """Directory with config/ and launch/: the installed share dir, else the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("metaseg_ros"))
        if (share / "config" / "metaseg.yaml").is_file():
            return share
    except Exception:  # not installed through colcon/CMake with sources
        pass
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LaunchArguments:
    """The launch file's arguments, with its defaults."""

    image: str = "/camera/image_raw"
    depth: str = "/camera/depth_registered/image_raw"  # with depth.enabled
    camera_info: str = "/camera/camera_info"  # with depth.enabled
    params_file: str = field(
        default_factory=lambda: str(package_share() / "config" / "metaseg.yaml"))
    namespace: str = ""
    use_sim_time: str = "false"
    backend: str = ""  # '' = as the params file says
    lifecycle: str = "false"  # true: metaseg_lifecycle_node
    autostart: str = "false"  # with lifecycle: configure and activate at start
    fastdds_profile: str = field(
        default_factory=lambda: str(package_share() / "config" / "fastdds_shm.xml"))


def launch_parameters(args: LaunchArguments) -> dict[str, object]:
    """The parameter dictionary the launch file passes after the params file (backend only
    when given, so that the params file's backend holds otherwise)."""
    overrides: dict[str, object] = {"use_sim_time": yaml.safe_load(args.use_sim_time) is True}
    if args.backend:
        overrides["backend"] = args.backend
    if is_lifecycle(args):
        overrides["autostart"] = yaml.safe_load(args.autostart) is True
    return overrides


def is_lifecycle(args: LaunchArguments) -> bool:
    """Whether the launch file starts the managed node."""
    return args.lifecycle.lower() == "true"


def executable_name(args: LaunchArguments) -> str:
    """The executable the launch file starts."""
    return LIFECYCLE_EXECUTABLE if is_lifecycle(args) else EXECUTABLE


def launch_remappings(args: LaunchArguments) -> list[tuple[str, str]]:
    """The remapping rules of the launch file."""
    return [("image", args.image), ("image/compressed", args.image + "/compressed"),
            ("depth", args.depth), ("camera_info", args.camera_info)]


def node_command(args: LaunchArguments, executable: str, work_dir: Path) -> list[str]:
    """argv launch_ros runs for the launch file (writes the parameter dict into work_dir)."""
    namespace = "/" + args.namespace.strip("/")
    node_name = f"{namespace.rstrip('/')}/{NODE_NAME}"
    overrides = work_dir / "launch_params_metaseg.yaml"
    overrides.write_text(yaml.dump({node_name: {"ros__parameters": launch_parameters(args)}}))
    argv = [executable, "--ros-args", "-r", f"__node:={NODE_NAME}", "-r", f"__ns:={namespace}",
            "--params-file", args.params_file, "--params-file", str(overrides)]
    for source, target in launch_remappings(args):
        argv += ["-r", f"{source}:={target}"]
    return argv


def profile_variables(distro: str) -> tuple[str, ...]:
    """Environment variables that name the Fast DDS profile file on ROS 2 `distro`."""
    if distro in LEGACY_DISTROS:
        return (PROFILE_VARIABLE, LEGACY_PROFILE_VARIABLE)
    return (PROFILE_VARIABLE,)


def node_environment(args: LaunchArguments, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the launch file gives the node (Fast DDS profile variables set)."""
    env = dict(os.environ if base is None else base)
    for variable in profile_variables(env.get("ROS_DISTRO", "")):
        env[variable] = args.fastdds_profile
    return env
