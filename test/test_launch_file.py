"""launch/metaseg.launch.py agrees with metaseg_ros.ros.launch_command (what the tests run).

launch/launch_ros are not installable here, so the launch file is read as Python source:
its arguments and defaults, environment, node name/namespace/parameters/remappings must be
those that launch_command spells out (and that test_node.py starts the node with).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from metaseg_ros.ros.launch_command import (
    EXECUTABLE,
    LEGACY_DISTROS,
    LEGACY_PROFILE_VARIABLE,
    NODE_NAME,
    PROFILE_VARIABLE,
    LaunchArguments,
    executable_name,
    launch_parameters,
    launch_remappings,
    node_command,
    node_environment,
)

pytestmark = pytest.mark.torch_free

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "metaseg.launch.py"


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name) and node.func.id == name]


def keyword(call: ast.Call, name: str) -> ast.expr:
    return next(k.value for k in call.keywords if k.arg == name)


def launch_configuration(expr: ast.expr, variables: dict[str, str]) -> str:
    """Name of the LaunchConfiguration `expr` stands for (directly or via a variable)."""
    if isinstance(expr, ast.Name):
        return variables[expr.id]
    assert isinstance(expr, ast.Call) and expr.func.id == "LaunchConfiguration", ast.dump(expr)
    return expr.args[0].value


def test_launch_file_matches_launch_command() -> None:
    tree = ast.parse(LAUNCH_FILE.read_text())
    variables = {target.id: call.args[0].value
                 for assign in ast.walk(tree) if isinstance(assign, ast.Assign)
                 for target in assign.targets if isinstance(target, ast.Name)
                 for call in [assign.value] if isinstance(call, ast.Call)
                 and getattr(call.func, "id", "") == "LaunchConfiguration"}

    defaults = LaunchArguments()
    declared = {}
    for call in calls(tree, "DeclareLaunchArgument"):
        default = keyword(call, "default_value")
        if isinstance(default, ast.Constant):
            declared[call.args[0].value] = default.value
        else:  # PathJoinSubstitution([share, "config", "<file>"])
            parts = [p.value for p in default.args[0].elts if isinstance(p, ast.Constant)]
            declared[call.args[0].value] = "/".join(parts)
    assert set(declared) == set(vars(defaults))
    for name, value in declared.items():
        assert getattr(defaults, name).endswith(value), (name, value)

    env = {call.args[0].value: launch_configuration(call.args[1], variables)
           for call in calls(tree, "SetEnvironmentVariable")}
    assert env == dict.fromkeys((PROFILE_VARIABLE, LEGACY_PROFILE_VARIABLE), "fastdds_profile")
    (legacy,) = [call for call in calls(tree, "SetEnvironmentVariable")
                 if call.args[0].value == LEGACY_PROFILE_VARIABLE]
    condition = ast.unparse(keyword(legacy, "condition"))
    assert "ROS_DISTRO" in condition and all(repr(d) in condition for d in LEGACY_DISTROS)

    (node,) = calls(tree, "Node")
    assert keyword(node, "package").value == "metaseg_ros"
    # executable = "<lifecycle executable>" if lifecycle else "<executable>"
    (choice,) = [a.value for a in ast.walk(tree) if isinstance(a, ast.Assign)
                 and any(getattr(t, "id", "") == keyword(node, "executable").id
                         for t in a.targets)]
    assert (choice.body.value, choice.orelse.value) == (
        executable_name(LaunchArguments(lifecycle="true")), EXECUTABLE)
    assert keyword(node, "name").value == NODE_NAME
    assert launch_configuration(keyword(node, "namespace"), variables) == "namespace"
    params_file, overrides = keyword(node, "parameters").elts
    assert launch_configuration(params_file, variables) == "params_file"
    # overrides = {...always...}; then `overrides["backend"] = ...` only when given.
    (literal,) = [a.value for a in ast.walk(tree) if isinstance(a, ast.Assign)
                  and any(getattr(t, "id", "") == overrides.id for t in a.targets)]
    optional = [t.slice.value for a in ast.walk(tree) if isinstance(a, ast.Assign)
                for t in a.targets if isinstance(t, ast.Subscript)
                and getattr(t.value, "id", "") == overrides.id]
    assert [k.value for k in literal.keys] == list(launch_parameters(defaults))
    assert [k.value for k in literal.keys] + optional == \
        list(launch_parameters(LaunchArguments(backend="eager", lifecycle="true")))
    remaps = keyword(node, "remappings").elts
    assert [r.elts[0].value for r in remaps] == [s for s, _ in launch_remappings(defaults)]
    assert launch_configuration(remaps[0].elts[1], variables) == "image"
    compressed = remaps[1].elts[1].elts  # [image, "/compressed"]
    assert launch_configuration(compressed[0], variables) == "image"
    assert compressed[1].value == "/compressed"
    assert [launch_configuration(r.elts[1], variables) for r in remaps[2:]] == \
        ["depth", "camera_info"]


def test_command_line_is_what_launch_ros_builds(tmp_path: Path) -> None:
    args = LaunchArguments(image="/cam/front", namespace="robot1", use_sim_time="true",
                           backend="onnxruntime", params_file="/p/metaseg.yaml",
                           fastdds_profile="/p/shm.xml")
    argv = node_command(args, "/bin/metaseg_node", tmp_path)
    overrides = tmp_path / "launch_params_metaseg.yaml"
    assert argv == ["/bin/metaseg_node", "--ros-args", "-r", "__node:=metaseg_node",
                    "-r", "__ns:=/robot1", "--params-file", "/p/metaseg.yaml",
                    "--params-file", str(overrides), "-r", "image:=/cam/front",
                    "-r", "image/compressed:=/cam/front/compressed",
                    "-r", "depth:=/camera/depth_registered/image_raw",
                    "-r", "camera_info:=/camera/camera_info"]
    written = yaml.safe_load(overrides.read_text())
    assert written == {"/robot1/metaseg_node": {"ros__parameters": {
        "use_sim_time": True, "backend": "onnxruntime"}}}
    env = node_environment(args, base={"PATH": "/bin"})
    assert env == {"PATH": "/bin", "FASTDDS_DEFAULT_PROFILES_FILE": "/p/shm.xml"}
    env = node_environment(args, base={"ROS_DISTRO": "jazzy"})
    assert env == {"ROS_DISTRO": "jazzy", "FASTDDS_DEFAULT_PROFILES_FILE": "/p/shm.xml",
                   "FASTRTPS_DEFAULT_PROFILES_FILE": "/p/shm.xml"}
    root = node_command(LaunchArguments(namespace=""), "x", tmp_path)
    assert "__ns:=/" in root
    # Without a backend argument the params file's backend holds.
    assert yaml.safe_load(overrides.read_text()) == {
        "/metaseg_node": {"ros__parameters": {"use_sim_time": False}}}
