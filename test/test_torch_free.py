"""The torch-free part of the package really needs no torch (the Python 3.10 lane, a robot
running a segmenter plugin), and the numpy it claims to support is the one that lane runs."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch_free

REPO = Path(__file__).resolve().parents[1]
# Every module under these is torch-free (packages walked whole).
TORCH_FREE_PACKAGES = ("metaseg_ros.tracking", "metaseg_ros.ros")
TORCH_FREE_MODULES = (
    "metaseg_ros.settings", "metaseg_ros.results", "metaseg_ros.image_codec",
    "metaseg_ros.masks", "metaseg_ros.visualization", "metaseg_ros.message_content",
    "metaseg_ros.classes", "metaseg_ros.user_errors", "metaseg_ros.errors",
    "metaseg_ros.inference.settings", "metaseg_ros.inference.stream",
    "metaseg_ros.inference.pipeline", "metaseg_ros.inference.plugin",
    "metaseg_ros.inference.engine",
    "metaseg_ros.data.types", "metaseg_ros.data.bag_format", "metaseg_ros.data.bag_access",
    "metaseg_ros.data.bag_reader", "metaseg_ros.data.bag_writer", "metaseg_ros.data.bag_frames",
    "metaseg_ros.data.synthetic", "metaseg_ros.data.synthetic_detections",
    "metaseg_ros.eval", "metaseg_ros.eval.frames", "metaseg_ros.eval.mot",
    "metaseg_ros.eval.hota", "metaseg_ros.eval.davis", "metaseg_ros.eval.vis",
    "metaseg_ros.eval.scoring", "metaseg_ros.eval.subsets", "metaseg_ros.eval.results_bag",
    "metaseg_ros.cli.make_synthetic",
    "metaseg_ros.geometry", "metaseg_ros.stamp_match", "metaseg_ros.outlines",
    "metaseg_ros.inference.cameras",
)
BLOCK_TORCH = "import sys\nfor _name in ('torch', 'torchvision'): sys.modules[_name] = None\n"


def torch_free_modules() -> list[str]:
    """The declared modules plus every module of the torch-free packages."""
    names = list(TORCH_FREE_MODULES)
    for package in TORCH_FREE_PACKAGES:
        names.append(package)
        path = REPO / Path(*package.split("."))
        names += [info.name for info in pkgutil.walk_packages([str(path)], prefix=package + ".")]
    return names


def test_torch_free_modules_import_with_torch_blocked() -> None:
    modules = torch_free_modules()
    assert "metaseg_ros.ros.node" in modules and "metaseg_ros.tracking.tracker" in modules
    code = (BLOCK_TORCH + "import importlib\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "print(len(sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_blocker_catches_a_torch_import() -> None:
    """The check above can fail: the model package does import torch."""
    code = BLOCK_TORCH + "import metaseg_ros.model\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0 and "torch" in result.stderr


def test_marked_test_files_collect_without_torch() -> None:
    """`make test-py310` collects these files where torch is not installed."""
    files = sorted(str(path.relative_to(REPO)) for path in (REPO / "test").glob("test_*.py")
                   if "pytest.mark.torch_free" in path.read_text())
    assert len(files) >= 20
    code = (BLOCK_TORCH + "import pytest\n"
            f"sys.exit(pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', "
            f"'-m', 'torch_free', *{files!r}]))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    match = re.search(r"(\d+)(?:/\d+)? tests? collected", result.stdout)
    assert match and int(match.group(1)) >= 200, result.stdout[-500:]


def test_the_numpy_minimum_is_the_lanes_numpy() -> None:
    """setup.py and requirements/runtime.txt state the same minimum, and the Python 3.10
    lane pins exactly that version, so the claim is tested."""
    setup = re.search(r'"numpy>=([\d.]+)"', (REPO / "setup.py").read_text()).group(1)
    runtime = re.search(r"^numpy>=([\d.]+)", (REPO / "requirements" / "runtime.txt").read_text(),
                        re.MULTILINE).group(1)
    lane = re.search(r"^numpy==([\d.]+)", (REPO / "requirements" / "py310.txt").read_text(),
                     re.MULTILINE).group(1)
    assert setup == runtime
    assert tuple(map(int, lane.split(".")[:2])) == tuple(map(int, setup.split(".")[:2]))


def test_cameras_with_a_plugin_step_without_torch() -> None:
    """Several cameras on a segmenter plugin run frames where torch cannot be imported
    (the py310 lane's node with `cameras`): stepping them together must not reach for the
    batching code of MetaSegmenter."""
    code = (BLOCK_TORCH + "sys.path.insert(0, 'test/helpers')\n"
            "import numpy as np\n"
            "from metaseg_ros.inference.cameras import create_camera_pipelines\n"
            "from metaseg_ros.inference.settings import ModelSettings, PipelineSettings\n"
            "from color_segmenter import draw_squares\n"
            "settings = PipelineSettings(ModelSettings(segmenter='color_segmenter:create'))\n"
            "pipelines = create_camera_pipelines(settings, ['front', 'down'])\n"
            "frame = draw_squares(40, 40, {0: (5, 5, 10)})\n"
            "for _ in range(3):\n"
            "    out = pipelines.step({'front': frame, 'down': frame})\n"
            "assert pipelines.last_batch_size == 1\n"
            "print(sorted(len(out[c].instances) for c in out))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[1, 1]", result.stdout
