"""Replay throughput on real footage: frames per second and where the time goes.

    .venv/bin/python scripts/bench_replay.py [--frames N] [--encoding jpeg|rgb8] [--backend B]

The footage is vtest.avi (a street scene, 795 frames of 768x576 at 10 fps) from Debian's
opencv-doc package. It is fetched once with `apt-get download opencv-doc` and `dpkg-deb -x`
into $METASEG_CACHE_DIR/footage (default ~/.cache/metaseg_ros/footage) and never committed;
where apt cannot reach the package the benchmark is skipped with the reason (exit 0).

Then: metaseg-make-bag turns it into a bag (CompressedImage jpeg by default, as cameras are
usually recorded), metaseg-replay runs the shipped tiny model over it (backend auto: ONNX
Runtime on a CPU) and writes results, report and overlay.mp4; this script prints the
throughput and each stage's share of the replay's wall time from report.json (the model is
the 'segment' stage; the rest is reading, decoding, tracking, overlay drawing, bag writing,
video encoding, metrics and the report).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def cache_dir() -> Path:
    root = os.environ.get("METASEG_CACHE_DIR") or Path.home() / ".cache" / "metaseg_ros"
    return Path(root) / "footage"


def fetch_vtest() -> tuple[Path | None, str]:
    """vtest.avi in the cache (fetched when missing), or None and why not."""
    target = cache_dir() / "vtest.avi"
    if target.is_file():
        return target, "cached"
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        return None, "apt-get/dpkg-deb not available (not a Debian/Ubuntu machine)"
    with tempfile.TemporaryDirectory(prefix="metaseg_opencv_doc_") as work:
        done = subprocess.run(["apt-get", "download", "opencv-doc"], cwd=work,
                              capture_output=True, text=True)
        packages = list(Path(work).glob("opencv-doc_*.deb"))
        if done.returncode != 0 or not packages:
            return None, f"apt-get download opencv-doc failed: {done.stderr.strip()[-300:]}"
        subprocess.run(["dpkg-deb", "-x", str(packages[0]), str(Path(work) / "x")], check=True)
        found = next((Path(work) / "x").rglob("vtest.avi"), None)
        if found is None:
            return None, "opencv-doc has no vtest.avi"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found, target)
    return target, "fetched with apt-get download opencv-doc"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, help="replay only the first N frames")
    parser.add_argument("--encoding", choices=("jpeg", "rgb8"), default="jpeg")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--work", type=Path, help="keep bags and report here (default: temp)")
    args = parser.parse_args()
    video, how = fetch_vtest()
    if video is None:
        print(f"bench_replay: skipped: {how}")
        return 0
    print(f"bench_replay: footage {video} ({how})")
    work = args.work or Path(tempfile.mkdtemp(prefix="metaseg_bench_replay_"))
    shutil.rmtree(work / "bag", ignore_errors=True)
    shutil.rmtree(work / "out", ignore_errors=True)
    limit = ["--max-frames", str(args.frames)] if args.frames else []
    started = time.perf_counter()
    subprocess.run([str(BIN / "metaseg-make-bag"), str(video), "--output", str(work / "bag"),
                    "--encoding", args.encoding, *limit], check=True)
    make_bag_s = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run([str(BIN / "metaseg-replay"), str(work / "bag"), "--output",
                    str(work / "out"), "--backend", args.backend, "--no-progress"], check=True)
    replay_s = time.perf_counter() - started
    report = json.loads((work / "out" / "report.json").read_text())
    print(f"\nmake-bag: {make_bag_s:.1f} s; metaseg-replay process: {replay_s:.1f} s (start-up, "
          f"model load included)")
    print(f"pipeline: {report['pipeline']}")
    print(f"replay: {report['frames']} frames in {report['wall_s']:.1f} s = "
          f"{report['frames_per_second']:.2f} frames/s; outside the model "
          f"{report['share_outside_model'] * 100:.1f} % of the time")
    print("stage      total s   share   median ms/frame")
    for stage, values in report["stages"].items():
        median = f"{values['median_ms']:8.2f}" if "median_ms" in values else "        "
        print(f"{stage:9s} {values['total_ms'] / 1e3:8.2f} "
              f"{report['share_of_wall_time'][stage] * 100:6.1f} % {median}")
    print(f"\nreport: {work / 'out' / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
