#!/usr/bin/env python3
"""N cameras: one metaseg_node for all of them against N nodes, one per camera, over DDS.

    .venv/bin/python scripts/bench_cameras.py --cameras 2 4 --rounds 2 --seconds 30 \\
        --json artifacts/bench_cameras.json

Each variant is started as the launch file starts the node (shipped parameters, the
shipped `tiny` weights on --backend, reliable input of depth 1, the Fast DDS profile):

    one-batched     one node, `cameras: [c0, ...]`, frames waiting together in one batch
    one-sequential  the same with `camera_batching: false` (one frame after the other)
    separate        N nodes, one camera each (namespace b/cK)

The topics are the same in every variant (/b/cK/image in, /b/cK/instances out). This script
publishes --size frames to every camera at --rate Hz together (a rig of synchronised
cameras, usually faster than the node can go: the keep-latest slots drop the surplus),
warms up for --warmup s, then measures for --seconds: frames/s answered per camera,
latency (publish -> InstanceMaskArray received) per answered frame, and the resident
memory of the node processes (RSS and PSS from /proc, summed over the N nodes; PSS counts
pages shared between the processes once). The variants are run alternately, --rounds
times, since the machine is shared: compare the ratios within a round. The load average
is recorded with every run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("one-batched", "one-sequential", "separate")


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB (Linux /proc)."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text()
               .splitlines() if line.startswith("VmRSS:"))
    pss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/smaps_rollup").read_text()
               .splitlines() if line.startswith("Pss:"))
    return rss, pss


def cpu_model() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured per run")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=10.0, help="Hz per camera")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--backend", default="eager")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


class Run:
    """The node process(es) of one variant with N cameras."""

    def __init__(self, variant: str, cameras: int, backend: str, work: Path) -> None:
        import yaml

        from metaseg_ros.ros.launch_command import LaunchArguments, node_command, node_environment

        self.names = [f"c{k}" for k in range(cameras)]
        params = yaml.safe_load((REPO / "config" / "metaseg.yaml").read_text())
        values = params["/**"]["ros__parameters"]
        values.update(input_reliability="reliable", input_depth=1, backend=backend)
        executable = shutil.which("metaseg_node", path=str(Path(sys.executable).parent))
        launches = []
        if variant == "separate":
            for name in self.names:
                launches.append((LaunchArguments(image=f"/b/{name}/image", namespace=f"b/{name}"),
                                 dict(values)))
        else:
            launches.append((LaunchArguments(namespace="b"),
                             dict(values, cameras=self.names,
                                  camera_batching=variant == "one-batched")))
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        for index, (launch, node_values) in enumerate(launches):
            folder = work / f"node{index}"
            folder.mkdir(parents=True)
            params["/**"]["ros__parameters"] = node_values
            (folder / "params.yaml").write_text(yaml.safe_dump(params))
            launch = LaunchArguments(**{**vars(launch), "params_file": str(folder / "params.yaml")})
            self.logs.append(folder / "node.log")
            self.processes.append(subprocess.Popen(
                node_command(launch, executable, folder), env=node_environment(launch),
                stdout=self.logs[-1].open("w"), stderr=subprocess.STDOUT))

    def wait_started(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all("listening on" in log.read_text() for log in self.logs):
                return
            if any(p.poll() is not None for p in self.processes):
                break
            time.sleep(0.5)
        raise RuntimeError(f"nodes did not start; see {[str(p) for p in self.logs]}")

    def memory(self) -> tuple[int, int]:
        totals = [memory_kib(p.pid) for p in self.processes]
        return sum(r for r, _ in totals), sum(p for _, p in totals)

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def measure(run: Run, args: argparse.Namespace, rig: Rig, first_second: int) -> dict:
    """Publish to every camera at the rate; frames/s, latency and memory in the window.
    Stamps start at `first_second`: every run has its own."""
    sent: dict[int, float] = {}
    start_warm = time.monotonic()
    measure_from = start_warm + args.warmup
    end = measure_from + args.seconds
    rss, pss = [], []
    index = 0
    next_sample = measure_from
    while time.monotonic() < end:
        index += 1
        stamp = first_second * 1_000_000_000 + index * 100_000_000
        sent[stamp] = rig.publish_all(stamp, index)
        now = time.monotonic()
        if now >= next_sample:
            memory = run.memory()
            rss.append(memory[0])
            pss.append(memory[1])
            next_sample += 1.0
        time.sleep(max(0.0, start_warm + index / args.rate - time.monotonic()))
    time.sleep(2.0)  # answers to the last frames
    per_camera, latencies = {}, []
    for name in run.names:
        answered = [(stamp, at) for stamp, at in rig.answers(name)
                    if stamp in sent and measure_from <= sent[stamp] < end]
        per_camera[name] = len(answered) / args.seconds
        latencies += [(at - sent[stamp]) * 1e3 for stamp, at in answered]
    return {
        "frames_per_second_per_camera": round(statistics.mean(per_camera.values()), 3),
        "frames_per_second_by_camera": {k: round(v, 3) for k, v in per_camera.items()},
        "latency_ms_median": round(statistics.median(latencies), 1) if latencies else None,
        "latency_ms_p90": round(statistics.quantiles(latencies, n=10)[-1], 1)
        if len(latencies) >= 10 else None,
        "rss_mib": round(statistics.mean(rss) / 1024, 1) if rss else None,
        "pss_mib": round(statistics.mean(pss) / 1024, 1) if pss else None,
        "frames_sent_per_camera": sum(1 for s in sent.values() if measure_from <= s < end),
    }


class Rig:
    """Publishes the same frame to every camera topic and records the answers."""

    def __init__(self, cameras: int, size: tuple[int, int]) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoGenerator
        from metaseg_ros.image_codec import rgb_to_image_fields
        from metaseg_ros.msg import InstanceMaskArray

        self.node = Node("bench_cameras_rig")
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.names = [f"c{k}" for k in range(cameras)]
        self.publishers = {n: self.node.create_publisher(Image, f"/b/{n}/image", reliable)
                           for n in self.names}
        self._answers: dict[str, list[tuple[int, float]]] = {n: [] for n in self.names}
        self._lock = threading.Lock()
        for name in self.names:
            self.node.create_subscription(InstanceMaskArray, f"/b/{name}/instances",
                                          self._on_answer(name), reliable)
        clip = SyntheticVideoGenerator(SyntheticConfig(image_size=tuple(size), num_frames=16),
                                       seed=3).clip(0, range(16))
        self.frames = [Image(**rgb_to_image_fields(f)) for f in clip.frames]
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on_answer(self, name: str):
        def store(msg) -> None:
            with self._lock:
                self._answers[name].append(
                    (msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec,
                     time.monotonic()))
        return store

    def wait_connected(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() for p in self.publishers.values()) and all(
                    self.node.count_publishers(f"/b/{n}/instances") for n in self.names):
                time.sleep(1.0)
                return
            time.sleep(0.1)
        raise RuntimeError("the rig never matched the nodes' topics")

    def publish_all(self, stamp: int, index: int) -> float:
        msg = self.frames[index % len(self.frames)]
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        at = time.monotonic()
        for name, publisher in self.publishers.items():
            msg.header.frame_id = f"{name}_optical"
            publisher.publish(msg)
        return at

    def answers(self, name: str) -> list[tuple[int, float]]:
        with self._lock:
            return list(self._answers[name])

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=5.0)
        self.node.destroy_node()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from metaseg_ros.ros.launch_command import profile_variables

    for variable in profile_variables(os.environ.get("ROS_DISTRO", "")):
        os.environ[variable] = str(REPO / "config" / "fastdds_shm.xml")
    os.environ.setdefault("ROS_DOMAIN_ID", str(120 + os.getpid() % 50))
    import rclpy

    rclpy.init()
    work = Path(tempfile.mkdtemp(prefix="metaseg_bench_cameras_"))
    results = {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
               "cpu": cpu_model(), "cores": os.cpu_count(), "date": date.today().isoformat(),
               "size": list(args.size), "rate_hz": args.rate, "backend": args.backend,
               "runs": []}
    try:
        for round_index in range(args.rounds):
            for cameras in args.cameras:
                rig = Rig(cameras, tuple(args.size))
                try:
                    for variant in args.variants:
                        load_before = os.getloadavg()[0]
                        run = Run(variant, cameras, args.backend,
                                  work / f"r{round_index}-{cameras}-{variant}")
                        try:
                            run.wait_started()
                            rig.wait_connected()
                            figures = measure(run, args, rig,
                                              1_000_000 * (1 + len(results["runs"])))
                        finally:
                            run.stop()
                        figures.update(round=round_index, cameras=cameras, variant=variant,
                                       load_before=round(load_before, 2),
                                       load_after=round(os.getloadavg()[0], 2))
                        results["runs"].append(figures)
                        print(json.dumps(figures), flush=True)
                finally:
                    rig.close()
    finally:
        rclpy.shutdown()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
