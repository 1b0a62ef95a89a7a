"""Start metaseg_node the way launch/metaseg.launch.py does, and watch its output."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from metaseg_ros.ros.launch_command import (
    LaunchArguments,
    executable_name,
    node_command,
    node_environment,
    package_share,
)

HELPERS = Path(__file__).resolve().parent


def node_executable(name: str = "metaseg_node") -> str:
    """An installed node executable (console script of the dev environment)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError(f"{name} is not installed (run `make setup`)")
    return found


class NodeProcess:
    """metaseg_node in a child process, started with the launch file's command line."""

    def __init__(self, work_dir: Path, overrides: dict | None = None, **launch_args: str) -> None:
        params = yaml.safe_load((package_share() / "config" / "metaseg.yaml").read_text())
        params["/**"]["ros__parameters"].update(overrides or {})
        params_file = work_dir / "metaseg_test_params.yaml"
        params_file.write_text(yaml.safe_dump(params))
        self.args = LaunchArguments(params_file=str(params_file), **launch_args)
        self.argv = node_command(self.args, node_executable(executable_name(self.args)),
                                 work_dir)
        env = node_environment(self.args)
        env["PYTHONPATH"] = os.pathsep.join([str(HELPERS), env.get("PYTHONPATH", "")])
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT prints every thread's stack (see stop)
        self.process = subprocess.Popen(self.argv, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self._lines.append(line.rstrip("\n"))

    @property
    def output(self) -> list[str]:
        """Lines the node printed so far (stdout and stderr)."""
        with self._lock:
            return list(self._lines)

    def wait_for_output(self, text: str, timeout: float) -> str:
        """The first output line containing `text`; AssertionError if none in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.output:
                if text in line:
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"node never printed {text!r}; output:\n" + "\n".join(self.output))

    def stop(self, timeout: float = 30.0) -> int:
        """SIGINT (as launch does on Ctrl-C), then wait; returns the exit code. A node that
        does not exit in `timeout` s gets SIGABRT, so that its output ends with the stack of
        every thread (where it hung), then SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with self._lock:
                    self._lines.append(f"[node_runner] no exit {timeout:.0f} s after SIGINT: "
                                       "SIGABRT for the threads' stacks")
                self.process.send_signal(signal.SIGABRT)
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        self._reader.join(timeout=5)
        return self.process.returncode
